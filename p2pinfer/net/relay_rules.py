"""Circuit Relay v2 settings: what a relay serves and what a private node reserves.

No I/O here; `p2pinfer/net/relay.py` (serving) and `relay_client.py` (reserving,
dialling) use these. Limits are per relay node; docs/network.md, "Reachability:
status", lists which of them py-libp2p 0.8.1 enforces itself and which we add.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from p2pinfer.addresses import IPV6_GROUP_PREFIX, address_group, parse_ip, tcp_endpoint

RelayMode = Literal["auto", "on", "off"]

CIRCUIT = "/p2p-circuit"


@dataclass(frozen=True)
class RelayServiceConfig:
    """A node's relay (HOP) service. `mode` auto: serve only while AutoNAT says this node
    is public; on: always (`--relay`); off: never (`--no-relay`)."""

    mode: RelayMode = "auto"
    max_reservations: int = 16  # slots in all
    # slots held by peers connected from one address (an IPv6 /56: `slot_group`)
    max_reservations_per_ip: int = 4
    reservation_ttl_s: int = 600  # a slot lives this long unless refreshed
    max_circuits: int = 32  # relayed connections open at once, in all
    max_circuits_per_peer: int = 4  # ... opened by one source peer
    max_circuits_per_target: int = 8  # ... to one reserved peer
    circuit_bytes: int = 16 * 1024 * 1024  # both directions together, per circuit
    circuit_duration_s: int = 900  # a circuit is cut after this long, busy or idle



Peer = TypeVar("Peer", bound=Hashable)


def slot_group(ip: str | None) -> str | None:
    """What a relay slot counts under: an IPv4 address, an IPv6 address's /56; None when
    the connection's address is unknown or not an IP."""
    return address_group(ip, IPV6_GROUP_PREFIX) if ip else None


@dataclass(frozen=True)
class SlotDecision(Generic[Peer]):
    """A relay's answer to a RESERVE: `refusal` (why not), else a slot, taken from
    `evict` when the relay is full."""

    refusal: str | None = None
    evict: Peer | None = None


def slot_decision(held: Mapping[Peer, str], peer: Peer, group: str | None, *,
                  total: int, per_group: int) -> SlotDecision[Peer]:
    """Whether `peer`, connecting from address group `group`, gets a slot, given `held`
    (holder -> its group, oldest first).

    Fair share rather than first come: when every slot is taken, a group holding at
    least two fewer slots than the largest takes that group's oldest slot. A refresh
    keeps its slot. So filling the relay first keeps no one out: a group that asks
    ends up holding at most one slot fewer than the largest group (or all it asked
    for), whatever order the asks come in, and a group is shut out only while every
    group holds a single slot: an attacker needs `total` addresses of its own for that
    (an IPv6 /56 counting as one), not `total / per_group`."""
    if peer in held:
        return SlotDecision()
    if group is None:
        return SlotDecision(refusal="no-ip")
    counts = Counter(held.values())
    mine = counts[group]
    if mine >= per_group:
        return SlotDecision(refusal="reservations-per-ip")
    if len(held) < total:
        return SlotDecision()
    largest, most = max(counts.items(), key=lambda item: item[1])  # first of equals
    if most < mine + 2:
        return SlotDecision(refusal="reservations")
    return SlotDecision(evict=next(p for p, g in held.items() if g == largest))


@dataclass(frozen=True)
class RelayClientConfig:
    """How a node behind NAT becomes reachable through relays.

    `reserve` are relays to reserve at whatever AutoNAT says (`--reserve-relay ADDR`,
    each `/.../p2p/<relay PeerID>`); with `auto` a node AutoNAT calls private also
    reserves at connected peers that serve the relay protocol, up to `max_relays` in all.
    """

    reserve: tuple[str, ...] = ()
    auto: bool = True
    max_relays: int = 2
    check_interval_s: float = 5.0  # how often reservations are checked (relay still there?)
    refresh_margin_s: float = 60.0  # refresh a reservation this long before it expires
    # ... and at least this often: a relay that gave the slot to a newcomer (a fair share,
    # RelayHop) tells the holder nothing, so a holder learns at its next refresh; at the
    # expiry alone that was up to 9 minutes of a dead circuit address in its adverts.
    refresh_every_s: float = 120.0
    dial_timeout_s: float = 10.0  # one relayed dial
    # A peer that has circuit addresses gets this long for a direct dial before its
    # relay is used: behind NAT a direct dial is often not refused but silently dropped.
    direct_first_s: float = 3.0
    # After a relayed dial, try for a direct connection (DCUtR, net/dcutr.py) before the
    # first stream; the relay carries the stream when that fails. Off by default: a
    # failed try (a symmetric NAT) delays the first stream by up to 6 s.
    dcutr: bool = False
    # Without `dcutr`: once a stream runs over a relay, try for a direct connection in the
    # background (`GuardedDCUtR.start_behind`): nothing waits for it, and the peer's next
    # streams go direct when it works. A node's gateway consumer has it on (`node
    # --no-dcutr-behind` turns it off); a one-shot `ask` has no next stream to gain.
    dcutr_behind: bool = False


#: A relay whose circuits end sooner than this (bytes both ways, or seconds) cannot carry
#: jobs: go-libp2p's relays grant 128 KiB and 2 min by default (enough for hole
#: punching), ours 16 MiB and 15 min. Zero in a relay's answer means no limit.
MIN_JOB_CIRCUIT_BYTES = 1024 * 1024
MIN_JOB_CIRCUIT_S = 300


def too_limited(circuit_bytes: int, circuit_s: int) -> bool:
    """Whether a relay granting circuits of `circuit_bytes` and `circuit_s` (0: none) is
    too small to carry jobs (`MIN_JOB_CIRCUIT_BYTES`, `MIN_JOB_CIRCUIT_S`)."""
    return (0 < circuit_bytes < MIN_JOB_CIRCUIT_BYTES) or (0 < circuit_s < MIN_JOB_CIRCUIT_S)


def is_circuit_addr(addr: str) -> bool:
    """Whether `addr` goes through a relay (`.../p2p/<relay>/p2p-circuit/...`)."""
    return CIRCUIT in addr


def circuit_addr(relay_addr: str, relay_id: str, target_id: str) -> str:
    """The address through which `target_id` is reached via the relay at `relay_addr`
    (a transport address of the relay, with or without its `/p2p/` part)."""
    base = relay_addr.split("/p2p/")[0]
    return f"{base}/p2p/{relay_id}{CIRCUIT}/p2p/{target_id}"


def path_of(transport_addrs: list[str] | None) -> str:
    """`relayed` when a connection's addresses go through a relay, else `direct`."""
    return "relayed" if any(is_circuit_addr(a) for a in transport_addrs or ()) else "direct"


def behind_nat(addrs: Sequence[str]) -> bool:
    """Whether a peer advertising `addrs` can be reached through its relays only: it names
    circuit addresses and no direct one at a public (global) IP or a DNS name. Loopback,
    private, link-local and unparsable addresses do not count as public."""
    circuits = [a for a in addrs if is_circuit_addr(a)]
    return bool(circuits) and not any(
        public_addr(a) for a in addrs if not is_circuit_addr(a))


def public_addr(addr: str) -> bool:
    """Whether the multiaddr text `addr` starts at a global IP address or a DNS name."""
    parts = addr.split("/")
    if len(parts) < 3 or parts[0]:
        return False
    proto, host = parts[1], parts[2]
    if proto in ("dns", "dns4", "dns6", "dnsaddr"):
        return not host.endswith((".local", "localhost"))
    if proto not in ("ip4", "ip6"):
        return False
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        return False


def worth_a_direct_try(addrs: Sequence[str],
                       local_ip_towards: Callable[[str], str | None]) -> bool:
    """Whether a peer advertising `addrs` (circuit ones among them) may answer a direct
    dial: it names a public address, or a private one on our own network (the local
    address the kernel would use to reach it shares its /24, or it is loopback). A
    peer behind someone else's NAT would drop the dial: it is reached through its
    relay at once, which saves `direct_first_s` and makes ordinary consumers and
    validators' checks (`VerifyConfig.check_via_relay`) reach it the same way.
    `local_ip_towards(ip)`: our source address towards `ip`, None if no route."""
    for addr in addrs:
        if is_circuit_addr(addr):
            continue
        if public_addr(addr):
            return True
        parts = addr.split("/")
        if len(parts) < 3 or parts[1] != "ip4":
            continue
        try:
            ip = ipaddress.IPv4Address(parts[2])
        except ValueError:
            continue
        if ip.is_loopback:
            return True
        local = local_ip_towards(str(ip))
        if local is not None and ipaddress.IPv4Address(local) in \
                ipaddress.IPv4Network(f"{ip}/24", strict=False):
            return True
    return False


def ip_scope(host: str) -> str | None:
    """Where the IP literal `host` can be reached from: "global", "loopback" or
    "private" (RFC 1918, unique local, shared CGNAT space, the documentation ranges);
    None for link-local, multicast, unspecified and reserved addresses, and for what
    is not an IP."""
    ip = parse_ip(host)
    if ip is not None and ip.is_loopback:  # before `is_reserved`: ::1 is in ::/8
        return "loopback"
    if ip is None or ip.is_link_local or ip.is_multicast or ip.is_unspecified \
            or ip.is_reserved:
        return None
    return "global" if ip.is_global else "private"


def punch_targets(named: Sequence[str], relays: Sequence[str], *, limit: int) -> list[str]:
    """Which of the addresses a DCUtR peer `named` may be dialled, as `/ipX/A/tcp/P`, at
    most `limit`: plain TCP ones only, never a relay's own (`relays`: the transport
    addresses of the relays the session runs through), and a non-global address only
    in a scope a relay is in (a loopback testnet's relay lets loopback addresses be
    punched, a relay on a private network private ones). Over a relay on the internet
    only global addresses are: a peer cannot make a node behind NAT connect into its
    own LAN or to its loopback services (attack 35)."""
    own = {endpoint for endpoint in map(tcp_endpoint, relays) if endpoint is not None}
    scopes = {ip_scope(ip) for ip, _ in own}
    out: list[str] = []
    for addr in named:
        endpoint = tcp_endpoint(addr)
        if endpoint is None or endpoint in own:
            continue
        scope = ip_scope(endpoint[0])
        if scope is None or (scope != "global" and scope not in scopes):
            continue
        ip, port = endpoint
        text = f"/{'ip6' if ':' in ip else 'ip4'}/{ip}/tcp/{port}"
        if text not in out:
            out.append(text)
        if len(out) >= limit:
            break
    return out
