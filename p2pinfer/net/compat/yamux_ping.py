"""Yamux: every PING frame a peer sends is answered, however many.

**Defect (py-libp2p 0.8.1).** `libp2p/stream_muxer/yamux/yamux.py`,
`Yamux.handle_incoming` answers each PING frame carrying SYN with a PING ACK, written
at once from the connection's read loop (`_write_frame`): 12 bytes in, a Noise message
out, ~0.1 ms of the event loop, with no bound on how many. 10,000 PINGs (120 KB) from a
fresh key took ~1.8 CPU-s (attack 60, docs/security.md): a 1 Mbit/s uplink keeps a
node's loop busy.

**What we do.** `install()` wraps `Yamux._write_frame` (over `yamux_open`'s): a
connection's PING ACKs go out PONG_BURST at once, then PONG_RATE_PER_S a second; past
it a PING is left unanswered, and a connection with ABUSE_CLOSE PINGs unanswered is
closed. go-yamux pings every 30 s for keep-alive, py-libp2p's own RTT loop every few
seconds.

**To drop it.** When py-libp2p rate-limits the PINGs it answers (go-yamux answers them
from a bounded queue), delete this module; the guard test
(tests/unit/net/compat/test_yamux_ping.py) shows the flood bounded.

**Upstream.** Not reported.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import trio
from libp2p.stream_muxer.yamux.yamux import (
    FLAG_ACK,
    HEADER_SIZE,
    TYPE_PING,
    YAMUX_HEADER_FORMAT,
    Yamux,
)

from p2pinfer.bounded import TokenBucket
from p2pinfer.net.compat import yamux_open

log = logging.getLogger(__name__)

PATCHED = {
    "libp2p.stream_muxer.yamux.yamux:Yamux._write_frame": "16ff969cdd0d2b1b",
    "libp2p.stream_muxer.yamux.yamux:Yamux.handle_incoming": "ad15ff6943feac20",
}
ORIGINALS = yamux_open.ORIGINALS  # libp2p's own `_write_frame`, as yamux_open found it
UPSTREAM = None
DRAFT = None

#: PING ACKs one connection may get at once, then a second.
PONG_BURST = 16
PONG_RATE_PER_S = 4.0
#: PINGs left unanswered after which the connection is closed.
ABUSE_CLOSE = 1_000
CLOSE_S = 2.0
_BUCKET_ATTR = "_p2pinfer_pong_bucket"
_DROPPED_ATTR = "_p2pinfer_pongs_dropped"
_WRAPPED_ATTR = "_p2pinfer_pong_rate"

Writer = Callable[[Yamux, bytes], Awaitable[None]]


def _is_pong(data: bytes) -> bool:
    if len(data) != HEADER_SIZE:
        return False
    _version, kind, flags, _stream, _value = struct.unpack(YAMUX_HEADER_FORMAT, data)
    return bool(kind == TYPE_PING and flags == FLAG_ACK)


def rated(inner: Writer, clock: Callable[[], float] = time.monotonic) -> Writer:
    """`inner` (a `_write_frame`), with PING ACKs held to the connection's rate."""

    async def write_frame(self: Yamux, data: bytes) -> None:
        if _is_pong(data) and not _take(self, clock()):
            dropped = self.__dict__.get(_DROPPED_ATTR, 0) + 1
            self.__dict__[_DROPPED_ATTR] = dropped
            if dropped == ABUSE_CLOSE:
                log.warning("connection closed: %d yamux pings unanswered peer=%s",
                            dropped, getattr(self, "peer_id", "?"))
                trio.lowlevel.spawn_system_task(_close, self, name="close for ping abuse")
            return
        await inner(self, data)

    setattr(write_frame, _WRAPPED_ATTR, True)
    return write_frame


def _take(conn: Yamux, now: float) -> bool:
    bucket: TokenBucket | None = conn.__dict__.get(_BUCKET_ATTR)
    if bucket is None:
        bucket = TokenBucket(PONG_RATE_PER_S, float(PONG_BURST), float(PONG_BURST), now)
        conn.__dict__[_BUCKET_ATTR] = bucket
    return bucket.take(now) == 0.0


async def _close(conn: Any) -> None:
    with trio.move_on_after(CLOSE_S), suppress(Exception):
        await conn.close()


def install() -> None:
    """Wrap the current `Yamux._write_frame` (idempotent; after `yamux_open.install`)."""
    current: Any = Yamux._write_frame
    if not getattr(current, _WRAPPED_ATTR, False):
        Yamux._write_frame = rated(current)  # type: ignore[method-assign,assignment]
