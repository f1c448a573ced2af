"""Swarm: one peer's streams can take the node's whole stream budget.

**Defect (py-libp2p 0.8.1).** `libp2p/stream_muxer/yamux/yamux.py`,
`Yamux.handle_incoming`, creates and acknowledges a stream for every SYN a peer sends
(it limits only the streams *we* open, to 256 a connection), and
`libp2p/network/connection/swarm_connection.py`, `SwarmConn._handle_muxed_stream`,
then waits for a place in the swarm's stream semaphore, the node's one budget of
10,000 streams, which its own outbound streams (a consumer's job, a provider's answer
to DHT and gossip) wait on too; each stream holds its place through protocol
negotiation (10 s) and its handler. So one peer, one fresh key, sending 10,050 bare
SYN frames (120 KB, 18 ms to send) took every place: the node spent ~4 s of its event
loop admitting them, its semaphore stood at 0, an honest peer's ping took 3.7 s, and
the next 10,050 SYNs keep it so.

**What we do.** `install()` wraps `SwarmConn._handle_muxed_stream`: before a stream
waits for the semaphore, it is reset at once (a Yamux RST, nothing else spent on it)
if its connection already holds `StreamShares.per_connection` (256, go-yamux's accept
backlog) inbound streams, if the peer's address (an IPv4 address, an IPv6 /56;
loopback uncounted unless `limit_loopback`) holds `per_address` (1,024) over all its
connections, or if fewer than `outbound_reserve` (1,000) places are left in the
semaphore: inbound streams never queue for the last places, so the node's own streams
always find one. And since a stream opened and reset at once holds no place but costs
the node ~0.2 ms of its event loop (a task, negotiation, the close), a connection may
open `burst` (512) streams at once, then `rate_per_s` (256) a second (a busy gateway
sends one provider a job a stream, and a 1-token job takes milliseconds), an address 4x
that over all its connections (attack 54: 24 bytes of SYN and RST a stream, 20,000 in
0.5 MB took 2.8 s of the node's loop). A connection that has had `abuse_close` (1,000)
streams refused is closed. A swarm gets its shares from `attach` (`run_host` does it);
one without them is libp2p's own.

**To drop it.** When py-libp2p limits inbound streams per connection and peer (its
resource manager has per-peer scopes that this path does not consult in 0.8.1), delete
this module; the guard test (tests/unit/net/compat/test_inbound_streams.py) checks
the defect and the canary.

**Upstream.** Not reported.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import trio
from libp2p.network.connection.swarm_connection import SwarmConn

from p2pinfer.bounded import RateLimiter, TokenBucket
from p2pinfer.net.compat import _canary
from p2pinfer.net.compat.cancelled_close import tcp_socket
from p2pinfer.net.compat.inbound_shares import socket_key

log = logging.getLogger(__name__)

PATCHED = {
    "libp2p.network.connection.swarm_connection:SwarmConn._handle_muxed_stream":
        "fb51f8a3e37c9800",
}
ORIGINAL = SwarmConn._handle_muxed_stream
ORIGINALS = {
    "libp2p.network.connection.swarm_connection:SwarmConn._handle_muxed_stream": ORIGINAL,
}
_canary.remember(ORIGINALS)
UPSTREAM = None

#: New inbound streams a connection may open at once, then a second (attack 54).
STREAM_BURST = 512
STREAM_RATE_PER_S = 256.0
#: An address may open this many times a connection's share, over all its connections.
ADDRESS_FACTOR = 4
MAX_ADDRESSES = 10_000  # addresses whose stream rate is remembered
SHARES_ATTR = "p2pinfer_stream_shares"
_RATE_ATTR = "p2pinfer_inbound_rate"
_HELD_ATTR = "p2pinfer_inbound_held"
_REFUSED_ATTR = "p2pinfer_inbound_refused"
_KEY_ATTR = "p2pinfer_inbound_key"
CLOSE_S = 2.0


class StreamShares:
    """Inbound streams held per connection and per address, for one swarm."""

    def __init__(self, *, per_connection: int = 256, per_address: int = 1024,
                 outbound_reserve: int = 1000, abuse_close: int = 1000,
                 limit_loopback: bool = False, rate_per_s: float = STREAM_RATE_PER_S,
                 burst: int = STREAM_BURST, clock: Callable[[], float] = time.monotonic,
                 ) -> None:
        if min(per_connection, per_address, abuse_close, burst) < 1 or outbound_reserve < 0 \
                or rate_per_s <= 0:
            raise ValueError("stream shares must be positive")
        self.per_connection = per_connection
        self.per_address = per_address
        self.outbound_reserve = outbound_reserve
        self.abuse_close = abuse_close
        self.limit_loopback = limit_loopback
        self.rate_per_s, self.burst, self._clock = rate_per_s, burst, clock
        self._address_rate = RateLimiter(ADDRESS_FACTOR * rate_per_s, ADDRESS_FACTOR * burst,
                                         clock, max_keys=MAX_ADDRESSES)
        self.by_address: Counter[str] = Counter()
        self.refused = 0
        self.closed_for_abuse = 0

    def key_of(self, conn: Any) -> str | None:
        """The address `conn`'s streams count under (None: not counted by address)."""
        if hasattr(conn, _KEY_ATTR):
            return getattr(conn, _KEY_ATTR)  # type: ignore[no-any-return]
        key = socket_key(tcp_socket(conn), self.limit_loopback)
        setattr(conn, _KEY_ATTR, key)
        return key

    def refusal(self, conn: Any, key: str | None) -> str | None:
        """Why a new inbound stream on `conn` is refused now, or None."""
        if getattr(conn, _HELD_ATTR, 0) >= self.per_connection:
            return f"{self.per_connection} inbound streams open on the connection"
        if key is not None and self.by_address[key] >= self.per_address:
            return f"{self.per_address} inbound streams open from {key}"
        semaphore = getattr(conn.swarm, "_stream_semaphore", None)
        if semaphore is not None and semaphore.value <= self.outbound_reserve:
            return "the stream budget's last places are kept for our own streams"
        return self._rate_refusal(conn, key)

    def _rate_refusal(self, conn: Any, key: str | None) -> str | None:
        """The rates, last: a stream refused for another reason takes no token."""
        bucket: TokenBucket | None = getattr(conn, _RATE_ATTR, None)
        now = self._clock()
        if bucket is None:
            bucket = TokenBucket(self.rate_per_s, float(self.burst), float(self.burst), now)
            setattr(conn, _RATE_ATTR, bucket)
        if bucket.take(now) > 0.0:
            return f"over {self.burst} new streams then {self.rate_per_s:g} a second"
        if key is not None and self._address_rate.acquire(key) > 0.0:
            return f"over {ADDRESS_FACTOR}x the new streams a connection may open, from {key}"
        return None


def attach(swarm: Any, shares: StreamShares) -> StreamShares:
    """Limit `swarm`'s inbound streams by `shares`."""
    setattr(swarm, SHARES_ATTR, shares)
    return shares


async def _refuse(shares: StreamShares, conn: Any, muxed_stream: Any, reason: str) -> None:
    shares.refused += 1
    refused = getattr(conn, _REFUSED_ATTR, 0) + 1
    setattr(conn, _REFUSED_ATTR, refused)
    if refused == 1:
        log.warning("inbound stream refused peer=%s reason=%s",
                    getattr(conn.muxed_conn, "peer_id", "?"), reason)
    with suppress(Exception):  # a stream already gone is as good as reset
        await muxed_stream.reset()
    if refused == shares.abuse_close:
        shares.closed_for_abuse += 1
        log.warning("connection closed: %d inbound streams refused peer=%s", refused,
                    getattr(conn.muxed_conn, "peer_id", "?"))
        trio.lowlevel.spawn_system_task(_close, conn, name="close for stream abuse")


async def _close(conn: Any) -> None:
    with trio.move_on_after(CLOSE_S), suppress(Exception):
        await conn.close()


async def _handle_muxed_stream(self: SwarmConn, muxed_stream: Any) -> None:
    shares: StreamShares | None = getattr(self.swarm, SHARES_ATTR, None)
    if shares is None:
        await ORIGINAL(self, muxed_stream)
        return
    key = shares.key_of(self)
    reason = shares.refusal(self, key)
    if reason is not None:
        await _refuse(shares, self, muxed_stream, reason)
        return
    setattr(self, _HELD_ATTR, getattr(self, _HELD_ATTR, 0) + 1)
    if key is not None:
        shares.by_address[key] += 1
    try:
        await ORIGINAL(self, muxed_stream)
    finally:
        setattr(self, _HELD_ATTR, getattr(self, _HELD_ATTR) - 1)
        if key is not None:
            shares.by_address[key] -= 1
            if shares.by_address[key] <= 0:
                del shares.by_address[key]


def install() -> None:
    """Wrap `SwarmConn._handle_muxed_stream` (idempotent)."""
    SwarmConn._handle_muxed_stream = _handle_muxed_stream  # type: ignore[method-assign]


__all__ = ["StreamShares", "attach", "install"]
