"""Typed settings of the network layer and the parsers for the addresses in them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import multiaddr
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from multiaddr import Multiaddr

from p2pinfer.errors import UsageError
from p2pinfer.identity import NodeIdentity
from p2pinfer.net.advert_gate import DEFAULT_MAX_ADVERT_BYTES
from p2pinfer.net.autonat_rules import AutoNatConfig
from p2pinfer.net.compat.inbound_shares import DEFAULT_PER_ADDRESS as DEFAULT_INBOUND_PER_ADDRESS
from p2pinfer.net.compat.inbound_shares import DEFAULT_RESERVE as DEFAULT_INBOUND_RESERVE
from p2pinfer.net.dht import DEFAULT_PROVIDE_INTERVAL_S
from p2pinfer.net.relay_rules import RelayClientConfig, RelayServiceConfig
from p2pinfer.protocol import CLOCK_SKEW_MS, MAX_ADVERT_TTL_MS

GOSSIP_MAX_RPC_BYTES = 1024 * 1024
ADDR_TTL_S = 600  # how long dialable addresses learnt from records stay in the peerstore


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch (the wire's time unit)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class NetConfig:
    """Everything `run_host` needs. Addresses are multiaddr strings.

    `listen_addrs` are plain TCP. `bootstrap` entries must end in
    `/p2p/<PeerID>`; they are dialled at start and re-dialled every
    `bootstrap_interval_s` while disconnected (after a failed dial sooner: 1 s,
    doubling up to that interval). `announce_addrs`, when set,
    replace the listen addresses in what the node tells others (use it behind
    NAT or when listening on 0.0.0.0). `deny_ips` (addresses or CIDR blocks)
    are never dialled and refused when they dial in; at most `max_inbound_per_address`
    inbound TCP connections are held from one address (an IPv6 /56; loopback ones
    uncounted unless `limit_loopback_inbound`; net/compat/inbound_shares.py), and the
    last `inbound_reserve` inbound slots go only to peers that proved themselves
    (`NetHost.value_peer`). Timers are in seconds;
    advert times in milliseconds on the injected `clock_ms`. `autonat` sets how the
    node learns whether it is reachable and how it answers others' dial-back requests;
    `relay` whether and within what limits it relays for others, `relay_client` where
    it reserves a slot to be reached through a relay (docs/network.md, "Reachability").
    """

    identity: NodeIdentity
    listen_addrs: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    announce_addrs: tuple[str, ...] = ()
    enable_mdns: bool = False
    deny_ips: tuple[str, ...] = ()
    max_inbound_per_address: int = DEFAULT_INBOUND_PER_ADDRESS
    limit_loopback_inbound: bool = False
    inbound_reserve: int = DEFAULT_INBOUND_RESERVE
    max_advert_ttl_ms: int = MAX_ADVERT_TTL_MS
    max_advert_bytes: int = DEFAULT_MAX_ADVERT_BYTES
    max_clock_skew_ms: int = CLOCK_SKEW_MS
    gossip_heartbeat_s: int = 1
    gossip_max_msgs_per_topic_per_s: float = 200.0
    gossip_max_rpc_bytes: int = GOSSIP_MAX_RPC_BYTES
    provide_interval_s: float = DEFAULT_PROVIDE_INTERVAL_S
    few_peers_refresh_s: float = 30.0  # routing refresh while under dht.FEW_PEERS peers
    bootstrap_interval_s: float = 30.0
    expire_interval_s: float = 5.0
    dial_timeout_s: float = 10.0
    clock_ms: Callable[[], int] = wall_clock_ms
    autonat: AutoNatConfig = field(default_factory=AutoNatConfig)
    relay: RelayServiceConfig = field(default_factory=RelayServiceConfig)
    relay_client: RelayClientConfig = field(default_factory=RelayClientConfig)


def parse_multiaddr(text: str, *, what: str) -> Multiaddr:
    """A multiaddr from user input; UsageError naming `what` if it does not parse."""
    try:
        return multiaddr.Multiaddr(text)
    except Exception as exc:
        raise UsageError(f"bad {what} address {text!r}: {exc}") from exc


def parse_listen_addr(text: str) -> Multiaddr:
    """A TCP listen multiaddr (`/ip4|ip6|dns.../tcp/PORT`); UsageError for anything else.

    QUIC works in py-libp2p 0.8.1 but secures connections with its own TLS 1.3
    handshake, not Noise, and websockets are not needed; so only TCP is
    accepted, keeping every connection Noise-secured (DESIGN.md).
    """
    addr = parse_multiaddr(text, what="listen")
    names = [p.name for p in addr.protocols()]
    if "tcp" not in names or any(n in names for n in ("ws", "wss", "quic", "quic-v1", "p2p")):
        raise UsageError(f"listen address {text!r} must be plain TCP, e.g. /ip4/0.0.0.0/tcp/4001")
    return addr


def parse_peer_addr(text: str) -> PeerInfo:
    """A dialable `/.../p2p/<PeerID>` address as py-libp2p PeerInfo; UsageError otherwise."""
    addr = parse_multiaddr(text, what="peer")
    try:
        return info_from_p2p_addr(addr)
    except Exception as exc:
        raise UsageError(f"peer address {text!r} must end in /p2p/<PeerID>: {exc}") from exc


def parse_peer_id(peer_id: str) -> ID:
    """py-libp2p's ID for a base58 PeerID; UsageError if malformed."""
    try:
        return ID.from_base58(peer_id)
    except Exception as exc:
        raise UsageError(f"not a PeerID: {peer_id!r}") from exc
