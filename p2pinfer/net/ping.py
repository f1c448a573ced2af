"""libp2p ping (`/ipfs/ping/1.0.0`): every node answers it, as go and rust libp2p peers
expect, and `ping` measures round trips through the whole stack (Noise, yamux, the
peers' event loops) in fractions of a millisecond; py-libp2p's own client rounds them to
whole milliseconds, too coarse for a LAN or a relay next door.

Serving is py-libp2p's `PingService`: 32 bytes echoed per ping, at most two ping streams
per peer, a stream closed after 10 s without a ping. An echo costs the pinger as much as
it costs us (it sends the bytes and reads them back), so a flood is bounded by its own
sending; the stream limit keeps a peer from parking streams, and `BoundedPingService`
forgets a peer with its last ping stream (py-libp2p kept an entry per peer forever).
"""

from __future__ import annotations

import os
import time
from typing import Protocol

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.ping import PingService

from p2pinfer.errors import StreamClosedError
from p2pinfer.net.streams import NetStream

PING_PROTOCOL_ID = "/ipfs/ping/1.0.0"
PING_BYTES = 32  # the spec's payload size

PATCHED = {"libp2p.host.ping:PingService.handle_ping": "eb6730ce272ba339"}
"""py-libp2p functions this module overrides or relies on, with their 0.8.1 source digest
(`net.compat._canary`; checked by tests/unit/net/compat/test_in_place.py)."""


class BoundedPingService(PingService):
    """py-libp2p's PingService, which keeps an (emptied) entry for every peer that ever
    pinged: one per key, and keys are free. Here a peer's entry goes with its last
    ping stream."""

    async def handle_ping(self, stream: INetStream) -> None:
        try:
            await super().handle_ping(stream)
        finally:
            peer = stream.muxed_conn.peer_id
            if not self._inbound_streams.get(peer):
                self._inbound_streams.pop(peer, None)


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
