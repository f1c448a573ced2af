"""Yamux: a new stream's SYN, and the ACK that answers it, each sent on its own.

**Defect (py-libp2p 0.8.1).** `libp2p/stream_muxer/yamux/yamux.py`: `Yamux.open_stream`
writes the stream's SYN (a WINDOW_UPDATE frame with the SYN flag) at once, and the
caller's first bytes follow in a frame of their own; on the other side
`Yamux.handle_incoming` answers the SYN with an ACK frame of its own before it hands
the stream to the application, whose first answer follows separately. Each frame is
encrypted and sent alone: one Noise message, one send and one wake-up of the peer's
read loop more each way for every stream. The yamux spec lets both ride on the stream's
next frame ("may be sent with a data or window update message"; go-yamux sends the SYN
with the first data), and py-libp2p's own reader accepts that. A job's request and its
provider's first answer each paid one.

**What we do.** `install()` wraps `Yamux._write_frame`. A frame that is only a SYN,
written inside `lazy_syn()` (a context variable; `new_stream_lazily`, which
`NetHost._open_pipelined` opens its streams with, sets it for a peer already connected:
that stream writes its proposal and request at once), or only an ACK (always: every
inbound libp2p stream answers with multistream-select at once, or is reset), is kept
back and goes out in front of that stream's next frame, whatever it is (the data; a FIN
or RST if the stream ends first): the same frames, in the same order, in one write. A
SYN followed by plain data goes out as that data frame with the SYN flag (as go-yamux
sends it): the peer's read loop then creates the stream with its first bytes already
buffered, instead of handing the stream to its handler after the SYN frame and
buffering the data one frame later; a listener that looks at what the dialer sent
before it answers (`multistream_listener`) then always sees the request (seen: under
load, 1 run in ~50 found the buffer still empty and answered in two writes). At
most `MAX_HELD` frames wait per connection (those of streams that ended meanwhile are
dropped when it fills); past that they are written at once, as libp2p does, so a peer
opening streams it never uses cannot grow the table. Everywhere
else the order is libp2p's own.

**To drop it.** When upstream sends the SYN with the first data and the ACK with the
first answer, delete this module and have `NetHost._open_pipelined` call the network's
`new_stream`; the guard tests (tests/unit/net/compat/test_yamux_open.py) fail on their
defect checks then.

**Upstream.** Not reported; no drafted patch.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from contextvars import ContextVar

from libp2p.abc import INetStream, INetworkService
from libp2p.peer.id import ID
from libp2p.stream_muxer.yamux.yamux import (
    FLAG_ACK,
    FLAG_SYN,
    HEADER_SIZE,
    TYPE_DATA,
    TYPE_WINDOW_UPDATE,
    YAMUX_HEADER_FORMAT,
    Yamux,
)

PATCHED = {
    "libp2p.stream_muxer.yamux.yamux:Yamux.open_stream": "f3e0ef79ec21d0cb",
    "libp2p.stream_muxer.yamux.yamux:Yamux._write_frame": "16ff969cdd0d2b1b",
    "libp2p.stream_muxer.yamux.yamux:Yamux.handle_incoming": "ad15ff6943feac20",
}
"""libp2p source this module replaces or relies on, with its digest at 0.8.1 (`_canary`)."""

ORIGINAL = Yamux._write_frame
ORIGINALS = {"libp2p.stream_muxer.yamux.yamux:Yamux._write_frame": ORIGINAL}
UPSTREAM = None
DRAFT = None

MAX_HELD = 256
"""Frames kept back per connection at most (go-yamux's backlog of unanswered streams)."""

_LAZY: ContextVar[bool] = ContextVar("p2pinfer_lazy_syn", default=False)
_HELD = "_p2pinfer_held_frames"
"""The attribute of a Yamux connection holding the frames kept back, by stream id."""


@contextlib.contextmanager
def lazy_syn(on: bool = True) -> Iterator[None]:
    """Streams opened in this block send their SYN with their first frame (if `on`)."""
    token = _LAZY.set(on)
    try:
        yield
    finally:
        _LAZY.reset(token)


async def new_stream_lazily(network: INetworkService, pid: ID) -> INetStream:
    """`network.new_stream(pid)`; over a connection already up, inside `lazy_syn()`."""
    with lazy_syn(pid in network.connections):
        return await network.new_stream(pid)


def _held_back(data: bytes) -> int | None:
    """The stream id of `data` if it is a frame to keep back: exactly a window update
    with no delta whose only flag is SYN (inside `lazy_syn()`) or ACK."""
    if len(data) != HEADER_SIZE:
        return None
    _version, kind, flags, stream_id, delta = struct.unpack(YAMUX_HEADER_FORMAT, data)
    if kind != TYPE_WINDOW_UPDATE or delta != 0:
        return None
    if flags == FLAG_ACK or (flags == FLAG_SYN and _LAZY.get()):
        return int(stream_id)
    return None


async def write_frame_opening_with_data(self: Yamux, data: bytes) -> None:
    """libp2p's `_write_frame`, with a stream's SYN or ACK kept back for its next frame."""
    held: dict[int, bytes] = self.__dict__.setdefault(_HELD, {})
    stream_id = _held_back(data)
    if stream_id is not None and len(held) >= MAX_HELD:
        for gone in [sid for sid in held if sid not in self.streams]:
            del held[gone]  # streams that ended without a frame of ours (reset by the peer)
    if stream_id is not None and stream_id not in held and len(held) < MAX_HELD:
        held[stream_id] = data
        return
    if held and len(data) >= HEADER_SIZE:
        opening = held.pop(struct.unpack_from(">I", data, 4)[0], None)
        if opening is not None:
            data = _opening(opening, data)
    await ORIGINAL(self, data)


def _opening(held: bytes, frame: bytes) -> bytes:
    """The held SYN or ACK and the stream's next `frame`, in one write: a SYN followed by a
    plain data frame is that frame with the SYN flag; anything else goes behind the held
    frame as a frame of its own."""
    version, kind, flags, stream_id, length = struct.unpack_from(YAMUX_HEADER_FORMAT, frame)
    held_flags = struct.unpack_from(YAMUX_HEADER_FORMAT, held)[2]
    if held_flags != FLAG_SYN or kind != TYPE_DATA or flags != 0:
        return held + frame
    return struct.pack(YAMUX_HEADER_FORMAT, version, kind, FLAG_SYN, stream_id,
                       length) + frame[HEADER_SIZE:]


def install() -> None:
    """Replace `Yamux._write_frame` (idempotent)."""
    Yamux._write_frame = write_frame_opening_with_data  # type: ignore[method-assign]
