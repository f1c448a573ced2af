"""Yamux: data past a stream's receive window is buffered anyway.

**Defect (py-libp2p 0.8.1).** `libp2p/stream_muxer/yamux/yamux.py`,
`Yamux.handle_incoming`, appends every DATA frame's payload to the stream's buffer and
only then takes it off the receive window; when the window goes negative it logs a
warning and sets it to 0. The window is what flow control promised the sender (256 KiB
at first): an honest sender stops there, a hostile one does not, and nothing else bounds
the buffer. One peer sending 18 MB on a stream nobody read yet (a stream in protocol
negotiation, or a job stream while the provider generates, which reads nothing until
the receipt) made the node hold all 18 MB; it holds as much as arrives for as long as
the stream lives.

**What we do.** `install()` wraps `Yamux.handle_incoming` so that the connection's
stream buffers (`stream_buffers`) check each payload against the stream's receive
window before it is appended: a payload larger than what is left of the window is a
protocol violation (go-yamux ends the session with `ErrRecvWindowExceeded` too), so it
is dropped and the connection closed. A well-behaved sender never exceeds what we
granted; the window only shrinks when data arrives and grows when we announce more.

**To drop it.** When py-libp2p refuses data past the receive window, delete this
module; the guard test (tests/unit/net/compat/test_yamux_recv_window.py) checks the
defect and the canary.

**Upstream.** Not reported.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any

import trio
from libp2p.stream_muxer.yamux.yamux import Yamux

from p2pinfer.net.compat import _canary

log = logging.getLogger(__name__)

PATCHED = {
    "libp2p.stream_muxer.yamux.yamux:Yamux.handle_incoming": "ad15ff6943feac20",
    "libp2p.stream_muxer.yamux.yamux:Yamux.open_stream": "f3e0ef79ec21d0cb",
    "libp2p.stream_muxer.yamux.yamux:Yamux._handle_incoming_with_ready_signal":
        "c4a74d82a0a2dcf2",
}
ORIGINAL = Yamux.handle_incoming
ORIGINALS = {"libp2p.stream_muxer.yamux.yamux:Yamux.handle_incoming": ORIGINAL}
_canary.remember(ORIGINALS)
UPSTREAM = None

CLOSE_S = 2.0


class WindowedBuffer(bytearray):
    """A stream's receive buffer that takes no payload larger than the stream's window."""

    def __init__(self, data: Any, conn: Any, stream_id: int) -> None:
        super().__init__(data)
        self.conn = conn
        self.stream_id = stream_id

    def extend(self, data: Any) -> None:
        stream = self.conn.streams.get(self.stream_id)
        if stream is not None and len(data) > max(stream.recv_window, 0):
            _violated(self.conn, self.stream_id, len(data), stream.recv_window)
            return
        super().extend(data)


class WindowedBuffers(dict[int, bytearray]):
    """A connection's `stream_buffers`, each a `WindowedBuffer`."""

    def __init__(self, conn: Any, buffers: dict[int, bytearray]) -> None:
        super().__init__()
        self.conn = conn
        for stream_id, buffer in buffers.items():
            self[stream_id] = buffer

    def __setitem__(self, stream_id: int, buffer: bytearray) -> None:
        if not isinstance(buffer, WindowedBuffer):
            buffer = WindowedBuffer(buffer, self.conn, stream_id)
        super().__setitem__(stream_id, buffer)


def _violated(conn: Any, stream_id: int, size: int, window: int) -> None:
    if getattr(conn, "p2pinfer_window_violated", False):
        return
    conn.p2pinfer_window_violated = True
    log.warning("yamux receive window exceeded peer=%s stream=%d data=%d window=%d: "
                "closing the connection", getattr(conn, "peer_id", "?"), stream_id, size,
                window)
    trio.lowlevel.spawn_system_task(_close, conn, name="close: yamux window exceeded")


async def _close(conn: Any) -> None:
    with trio.move_on_after(CLOSE_S), suppress(Exception):
        await conn.close()


async def handle_incoming(self: Yamux) -> None:
    if not isinstance(self.stream_buffers, WindowedBuffers):
        self.stream_buffers = WindowedBuffers(self, self.stream_buffers)
    await ORIGINAL(self)


def install() -> None:
    """Wrap `Yamux.handle_incoming` (idempotent)."""
    Yamux.handle_incoming = handle_incoming  # type: ignore[method-assign]


__all__ = ["WindowedBuffer", "WindowedBuffers", "install"]
