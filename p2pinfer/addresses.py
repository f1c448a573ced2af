"""IP addresses as the node's limits read them: one parsing, one loopback rule and one
grouping of an address with its neighbours, for every layer that counts peers or
clients by where they come from (the HTTP connection gate, the libp2p inbound shares,
AutoNAT's observed address, the gateway's bind check), and the plain TCP multiaddr
that AutoNAT dials back and DCUtR punches (`tcp_endpoint`).

An address from a socket or a peer may carry brackets (`[::1]`), a zone (`fe80::1%eth0`)
or be an IPv4 address written as IPv6 (`::ffff:192.0.2.7`, what a dual-stack socket
reports for an IPv4 client); all three mean the plain address here.
"""

from __future__ import annotations

import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(host: str) -> IPAddress | None:
    """`host` as an IP address (IPv4-mapped IPv6 as IPv4), or None if it is not one."""
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def normal_ip(host: str) -> str | None:
    """`host` as `parse_ip` reads it, written the standard way; None if not an IP."""
    ip = parse_ip(host)
    return None if ip is None else str(ip)


def is_loopback(host: str) -> bool:
    """Whether `host` (an IP literal or `localhost`) is this machine only. Any other
    name is not: it may resolve to a public address."""
    if host.lower() == "localhost":
        return True
    ip = parse_ip(host)
    return ip is not None and ip.is_loopback


def address_group(host: str, ipv6_prefix: int) -> str | None:
    """What a per-address limit counts `host` under: an IPv4 address itself, an IPv6
    address's network of `ipv6_prefix` bits (one subscriber gets a whole /64 or /56, so
    counting single IPv6 addresses would limit nothing); None if `host` is not an IP."""
    ip = parse_ip(host)
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{ip}/{ipv6_prefix}", strict=False))
    return None if ip is None else str(ip)


#: How the node's per-address limits group IPv6 addresses (inbound connections, relay
#: slots and circuits, DHT records, adverts asked for, AutoNAT voters, payers' chain
#: reads, wrong API keys): a /56, one subscriber's allocation (a /64 or a /56 whole).
#: The HTTP connection gate counts /64s (`http/conn_gate.client_key`).
IPV6_GROUP_PREFIX = 56


def asker_group(peer: str, host: str | None, *, relayed: bool = False) -> str:
    """Whom a per-address budget counts a request of `peer` under: the address group of
    `host` (its connection's remote IP), or `peer` itself when the connection comes
    through a relay (`host` is the relay's), from loopback (a local testnet's nodes all
    share 127.0.0.1) or from no IP."""
    group = None if relayed or host is None or is_loopback(host) else address_group(
        host, IPV6_GROUP_PREFIX)
    return group or peer


def tcp_endpoint(addr: str) -> tuple[str, int] | None:
    """(ip, port) of a plain `/ip4|ip6/X/tcp/P[/p2p/ID]` multiaddr text, the IP as written;
    None for any other kind (DNS, circuit, QUIC) or a malformed one."""
    parts = addr.split("/")
    if len(parts) < 5 or parts[0] or parts[1] not in ("ip4", "ip6") or parts[3] != "tcp":
        return None
    if parts[5:] and (parts[5] != "p2p" or len(parts) != 7):
        return None
    if parse_ip(parts[2]) is None or not parts[4].isdigit() or not 0 < int(parts[4]) < 65536:
        return None
    return parts[2], int(parts[4])


def local_ip_towards(ip: str) -> str | None:
    """The source address this machine would use to reach `ip` (a UDP socket's connect
    picks the route and sends nothing), None if there is no route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((ip, 9))
            local: str = s.getsockname()[0]
        except OSError:
            return None
    return local


__all__ = ["address_group", "is_loopback", "local_ip_towards", "normal_ip", "parse_ip",
           "tcp_endpoint"]
