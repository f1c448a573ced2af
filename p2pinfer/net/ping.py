"""libp2p ping (`/ipfs/ping/1.0.0`): every node answers it, as go and rust libp2p peers
expect, and `ping` measures round trips through the whole stack (Noise, yamux, the
peers' event loops) in fractions of a millisecond; py-libp2p's own client rounds them to
whole milliseconds, too coarse for a LAN or a relay next door.

Serving is py-libp2p's `PingService`: 32 bytes echoed per ping, at most two ping streams
per peer, a stream closed after 10 s without a ping; the stream limit keeps a peer from
parking streams, and `BoundedPingService` forgets a peer with its last ping stream
(py-libp2p kept an entry per peer forever). An echo costs the node a read and a write
through Yamux and Noise, ~40 us of its event loop, and a native pinger that writes pings
in bulk next to nothing, so a peer's pings are echoed PING_BURST at once, then
PING_RATE_PER_S a second, the rest waiting their turn (attack 55: 2,048 pings written
at once were all echoed in ~0.3 s, as often as asked). Go and rust peers ping every
15 s or on demand; a benchmark's 20 pings in a row fit the burst.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.ping import PingService

from p2pinfer.bounded import RateLimiter
from p2pinfer.errors import StreamClosedError
from p2pinfer.net.streams import NetStream

PING_PROTOCOL_ID = "/ipfs/ping/1.0.0"
PING_BYTES = 32  # the spec's payload size

PATCHED = {"libp2p.host.ping:PingService.handle_ping": "eb6730ce272ba339"}
"""py-libp2p functions this module overrides or relies on, with their 0.8.1 source digest
(`net.compat._canary`; checked by tests/unit/net/compat/test_in_place.py)."""


#: Pings one peer may have echoed at once, then a second (attack 55).
PING_BURST = 32
PING_RATE_PER_S = 4.0
MAX_PINGERS = 4096  # peers whose ping rate is remembered (least recent forgotten first)


class BoundedPingService(PingService):
    """py-libp2p's PingService, which keeps an (emptied) entry for every peer that ever
    pinged: one per key, and keys are free. Here a peer's entry goes with its last
    ping stream, and its pings are echoed at its rate (`_Rationed`)."""

    def __init__(self, host: IHost, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(host)
        self._rates = RateLimiter(PING_RATE_PER_S, PING_BURST, clock, max_keys=MAX_PINGERS)

    async def handle_ping(self, stream: INetStream) -> None:
        try:
            rationed = _Rationed(stream, self._rates, str(stream.muxed_conn.peer_id))
            await super().handle_ping(rationed)  # type: ignore[arg-type]
        finally:
            peer = stream.muxed_conn.peer_id
            if not self._inbound_streams.get(peer):
                self._inbound_streams.pop(peer, None)


class _Rationed:
    """A ping stream whose reads wait for the pinger's rate: each 32 bytes read takes one
    ping of its peer's bucket (py-libp2p's handler reads a ping, then echoes it)."""

    def __init__(self, stream: INetStream, rates: RateLimiter, peer: str) -> None:
        self._stream, self._rates, self._peer = stream, rates, peer

    async def read(self, n: int | None = None) -> bytes:
        data = await self._stream.read(n)
        cost = min(1.0, len(data) / PING_BYTES)
        while (wait := self._rates.acquire(self._peer, cost)) > 0.0:
            await trio.sleep(wait)
        return data

    def __getattr__(self, name: str) -> Any:  # the rest is the stream's own
        return getattr(self._stream, name)


class StreamOpener(Protocol):
    """What `ping` uses of a `NetHost` (net/nethost.py, which serves ping)."""

    async def open_stream(self, peer_id: str, protocol: str, *, first: bytes | None = None,
                          timeout_s: float | None = None) -> NetStream: ...


def serve_ping(host: IHost) -> BoundedPingService:
    """Answer pings on `host` (py-libp2p's PingService and its per-peer stream limit)."""
    service = BoundedPingService(host)
    host.set_stream_handler(TProtocol(PING_PROTOCOL_ID), service.handle_ping)
    return service


async def ping(net: StreamOpener, peer_id: str, count: int = 1, *,
               timeout_s: float = 10.0) -> list[float]:
    """`count` round trips to `peer_id`, in milliseconds, on one ping stream (dialling the
    peer if needed; the dial is not timed). PeerTimeoutError if an echo takes over
    `timeout_s`; StreamClosedError if the peer closes or resets the stream, or echoes
    other bytes than it was sent."""
    stream = await net.open_stream(peer_id, PING_PROTOCOL_ID, timeout_s=timeout_s)
    rtts: list[float] = []
    try:
        for _ in range(count):
            payload = os.urandom(PING_BYTES)
            started = time.perf_counter()
            await stream.write(payload, timeout_s=timeout_s)
            echo = b""
            while len(echo) < PING_BYTES:
                more = await stream.read_some(PING_BYTES - len(echo), timeout_s=timeout_s)
                if not more:
                    raise StreamClosedError(f"{peer_id} closed the ping stream")
                echo += more
            rtts.append((time.perf_counter() - started) * 1000)
            if echo != payload:
                raise StreamClosedError(f"{peer_id} echoed other bytes than the ping")
    except BaseException:  # cancelled too: shielded, or the reset would never go out
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await stream.reset()
        raise
    await stream.close()
    return rtts
