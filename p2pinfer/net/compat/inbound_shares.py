"""Swarm: one address can take every inbound connection slot.

**Defect (py-libp2p 0.8.1).** `libp2p/network/swarm.py`,
`Swarm._handle_inbound_connection` admits at most `max_connections - min_connections`
(300 - 50 = 250) inbound connections at once and closes any more at once, counting
those still in their security handshake, which it waits for up to ~10 s; nothing limits
what one remote address holds. So one host that opens 250 TCP connections and sends
nothing (no key, no handshake), again every 10 s, keeps every other peer out: a consumer
cannot reach the provider, a new node cannot join through the bootstrap node (measured:
an honest dial behind 260 idle connections from one address failed at once, "failed to
negotiate the secure protocol"; with 10 it took 7 ms).

**And a slot outlives its connection.** `Swarm._do_handle_inbound_connection`, after a
connection's upgrade, waits for the whole swarm to stop ("keep handler alive"), and the
slot is given back only when it returns: every inbound connection that ever succeeded
keeps a slot after it closed, so after 250 of them (a peer reconnecting, consumers
coming and going) the node refuses every inbound connection until it restarts
(measured: 3 connections opened and closed, 3 slots still taken, no connection left).

**What we do.** `install()` wraps `Swarm._handle_inbound_connection`: before libp2p's
own cap, a TCP connection counts under its remote address (an IPv4 address, an IPv6
address's /56, as go-libp2p's resource manager counts them) for as long as libp2p
handles it, and past `InboundShares.per_address` (16: twice go-libp2p's default of 8,
for a few nodes behind one NAT) from that address it is closed at once. So one address
holds at most 16 of the 250, and filling them takes 16 addresses. Loopback peers
(a local testnet's nodes all come from 127.0.0.1) are not counted unless
`limit_loopback`, and a relayed connection (a circuit through a relay) is not a TCP
connection here and is not counted: every peer behind one relay would share the
relay's address.

**Peers that proved themselves come first.** Per-address shares make a flood cost 16
addresses, which a /48 of IPv6 or a few cloud hosts give. So the last `reserve` (50)
of libp2p's 250 slots go only to addresses that have proved themselves (`value`): a
provider this node got a good job from, a consumer whose receipt paid for one (the
job client and job server mark them, `NetHost.value_peer`), the 4,096 most recent.
A flood from any number of new addresses then leaves those peers 50 slots (a new
honest peer waits, as it would for any full node).

**And new connections come at a bounded rate.** Each inbound connection costs the node
~10 ms of CPU (Noise handshake, identify, the protocols that greet a new peer; measured
12-06: 0.8 s of CPU in 5 s at 15 connections a second), while its Noise handshake costs
a native client microseconds: one address connecting and hanging up 100 times a
second would hold the node's event loop. So an address may open `rate_per_s` (2) new
connections a second after a burst of `burst` (16), and new addresses together
`total_rate_per_s` (50) after 100 (proven ones are not held to that); past either,
the connection is closed at once, before any handshake. A swarm gets its shares from
`attach` (`run_host` does it); one without them is libp2p's own. For every inbound
connection, counted or not, libp2p's handler is cancelled once the connection is
closed (by either side: `handled_until_closed` watches its `close`), so its slot and
its share come back then.

**And it notes who connected.** Every inbound TCP connection's remote IP and time is
kept (`arrivals`, the last 1,024 addresses) before any limit: AutoNAT counts a server's
"I reached you" as a fact when its dial-back was seen arriving (`reached_from`).

**To drop it.** When py-libp2p limits inbound connections per address (its
`rcmgr.cidr_limits` exists but is not consulted on this path in 0.8.1) and gives a
slot back when its connection closes, delete this module; the guard tests
(tests/unit/net/compat/test_inbound_shares.py) check both defects and the canary.

**Upstream.** Not reported.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import trio
from libp2p.io.trio import TrioTCPStream
from libp2p.network.swarm import Swarm

from p2pinfer.addresses import IPV6_GROUP_PREFIX, address_group, is_loopback, normal_ip
from p2pinfer.bounded import RateLimiter, TokenBucket, keep_latest
from p2pinfer.net.compat import _canary
from p2pinfer.net.compat.cancelled_close import tcp_socket

log = logging.getLogger(__name__)

PATCHED = {
    "libp2p.network.swarm:Swarm._handle_inbound_connection": "0800fdf9770ed8e6",
    # holds the slot until the swarm stops (`manager.wait_finished()` after the upgrade)
    "libp2p.network.swarm:Swarm._do_handle_inbound_connection": "c22fdfd5289f671c",
}
ORIGINAL = Swarm._handle_inbound_connection
ORIGINALS = {"libp2p.network.swarm:Swarm._handle_inbound_connection": ORIGINAL}
_canary.remember(ORIGINALS)
UPSTREAM = None

DEFAULT_PER_ADDRESS = 16
DEFAULT_RESERVE = 50
VALUED_MEMORY = 4096
RATE_PER_S, BURST = 2.0, 16  # new inbound connections an address may open
TOTAL_RATE_PER_S, TOTAL_BURST = 50.0, 100  # ... and all addresses not yet proven together
CLOSE_S = 1.0
#: Remote IPs whose last inbound TCP connection time is kept (`InboundShares.reached_from`:
#: AutoNAT's evidence that a dial-back arrived, attack 77).
ARRIVALS_KEPT = 1024
SHARES_ATTR = "p2pinfer_inbound_shares"


def address_key(host: str) -> str | None:
    """What a share is counted under: an IPv4 address, an IPv6 address's /56; None for
    what is not an IP address."""
    return address_group(host, IPV6_GROUP_PREFIX)


def peer_host(sock: Any) -> str | None:
    """The remote host of the TCP socket `sock` as it reports it, or None (no socket, or
    no peer address)."""
    try:
        return str(sock.getpeername()[0])
    except (OSError, AttributeError, IndexError, TypeError):
        return None


def socket_key(sock: Any, limit_loopback: bool) -> str | None:
    """What a connection over the TCP socket `sock` counts under (`address_key` of its
    peer), or None: no socket or peer address, or a loopback peer (127.0.0.0/8, ::1)
    left uncounted. Loopback is the peer's own address, not its group: ::1's /56 is
    ::/56, which is not loopback."""
    host = peer_host(sock)
    if host is None or (not limit_loopback and is_loopback(host)):
        return None
    return address_key(host)


class InboundShares:
    """Inbound TCP connections held per remote address, for one swarm."""

    def __init__(self, per_address: int = DEFAULT_PER_ADDRESS, *,
                 limit_loopback: bool = False, reserve: int = DEFAULT_RESERVE,
                 rate_per_s: float = RATE_PER_S, burst: int = BURST,
                 total_rate_per_s: float = TOTAL_RATE_PER_S, total_burst: int = TOTAL_BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_address < 1 or reserve < 0 or min(rate_per_s, total_rate_per_s) <= 0:
            raise ValueError("per_address must be at least 1, reserve at least 0, rates > 0")
        self.per_address = per_address
        self.limit_loopback = limit_loopback
        self.reserve = reserve
        self.clock = clock
        self.rates = RateLimiter(rate_per_s, burst, clock, max_keys=VALUED_MEMORY)
        self.total_rate = TokenBucket(total_rate_per_s, total_burst, total_burst, clock())
        self.held: Counter[str] = Counter()
        self.valued: OrderedDict[str, None] = OrderedDict()  # addresses, newest last
        self.refused = 0
        self.arrivals: OrderedDict[str, float] = OrderedDict()  # remote IP -> clock()

    def arrived(self, conn: Any) -> None:
        """Note that the inbound `conn` came in (a TCP connection: its peer's IP, now)."""
        if isinstance(conn, TrioTCPStream):
            host = normal_ip(peer_host(getattr(conn.stream, "socket", None)) or "")
            if host is not None:
                keep_latest(self.arrivals, host, self.clock(), ARRIVALS_KEPT)

    def reached_from(self, host: str, since: float) -> bool:
        """Whether a TCP connection from `host` (an IP) came in at `since` (a `clock()`
        time) or later; from a loopback `host`, one from any loopback address (a local
        node's dialers connect from 127.0.0.1 whatever address it listens on)."""
        ip = normal_ip(host)
        if ip is None:
            return False
        if is_loopback(ip):
            return any(at >= since for seen, at in reversed(self.arrivals.items())
                       if is_loopback(seen))
        return self.arrivals.get(ip, -1.0) >= since

    def value(self, sock: Any) -> str | None:
        """Count the address of the TCP socket `sock` (a peer's that proved itself) among
        those the reserve is kept for; the address, or None if it is not counted."""
        key = socket_key(sock, self.limit_loopback)
        if key is not None:
            keep_latest(self.valued, key, None, VALUED_MEMORY)
        return key

    def refusal(self, key: str, free_slots: int) -> str | None:
        """Why a new inbound connection from `key` is refused now, or None."""
        if self.held[key] >= self.per_address:
            return f"{self.per_address} already held from {key}"
        if free_slots <= self.reserve and key not in self.valued:
            return f"the last {self.reserve} slots are kept for proven peers; {key} is new"
        if self.rates.acquire(key) > 0:
            return f"over {self.rates.rate_per_s:g} new connections a second from {key}"
        if key not in self.valued and self.total_rate.take(self.clock()) > 0:
            return (f"over {self.total_rate.rate_per_s:g} new connections a second from "
                    "peers not yet proven")
        return None

    def key_of(self, conn: Any) -> str | None:
        """The address `conn` counts under, or None if it is not counted."""
        if not isinstance(conn, TrioTCPStream):
            return None  # a relayed circuit, or another transport
        return socket_key(getattr(conn.stream, "socket", None), self.limit_loopback)


def attach(swarm: Any, shares: InboundShares) -> InboundShares:
    """Limit `swarm`'s inbound connections per address by `shares`."""
    setattr(swarm, SHARES_ATTR, shares)
    return shares


def value_peer(swarm: Any, peer_id: Any) -> list[str]:
    """Keep the addresses of `swarm`'s TCP connections to `peer_id` among the valued (a
    swarm without shares keeps nothing); the addresses kept."""
    shares: InboundShares | None = getattr(swarm, SHARES_ATTR, None)
    if shares is None:
        return []
    kept = (shares.value(tcp_socket(conn)) for conn in swarm.get_connections(peer_id))
    return [key for key in kept if key is not None]


async def handled_until_closed(swarm: Swarm, conn: Any, maddr: Any) -> None:
    """libp2p's own handler of the inbound `conn`, cancelled as soon as `conn` is closed
    (by either side): libp2p's waits for the whole swarm to stop, and with it its hold
    on an inbound slot and on our share."""
    closed = trio.Event()
    close_conn = conn.close

    async def close() -> None:
        try:
            await close_conn()
        finally:
            closed.set()

    try:
        conn.close = close
    except AttributeError:  # a connection we cannot watch: libp2p's behaviour
        await ORIGINAL(swarm, conn, maddr)
        return

    async def cancel_once_closed(scope: trio.CancelScope) -> None:
        await closed.wait()
        scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_once_closed, nursery.cancel_scope)
        await ORIGINAL(swarm, conn, maddr)
        nursery.cancel_scope.cancel()


async def _handle_inbound_connection(self: Swarm, read_write_closer: Any, maddr: Any) -> None:
    shares: InboundShares | None = getattr(self, SHARES_ATTR, None)
    if shares is not None:
        shares.arrived(read_write_closer)
    key = shares.key_of(read_write_closer) if shares is not None else None
    if shares is None or key is None:
        await handled_until_closed(self, read_write_closer, maddr)
        return
    limiter = self._inbound_limiter
    reason = shares.refusal(key, int(limiter.total_tokens) - limiter.borrowed_tokens)
    if reason is not None:
        shares.refused += 1
        if shares.refused == 1 or shares.refused % 1000 == 0:
            log.warning("inbound connection refused: %s (refused so far: %d)", reason,
                        shares.refused)
        with trio.move_on_after(CLOSE_S) as scope, suppress(Exception):  # gone is closed
            scope.shield = True
            await read_write_closer.close()
        return
    shares.held[key] += 1
    try:
        await handled_until_closed(self, read_write_closer, maddr)
    finally:
        shares.held[key] -= 1
        if shares.held[key] <= 0:
            del shares.held[key]


def install() -> None:
    """Wrap `Swarm._handle_inbound_connection` (idempotent)."""
    Swarm._handle_inbound_connection = _handle_inbound_connection  # type: ignore[method-assign]


__all__ = ["InboundShares", "address_key", "attach", "install", "value_peer"]
