"""Reading what a Yamux session wrote: the frames in one write (one Noise message)."""

from __future__ import annotations

import struct

from libp2p.stream_muxer.yamux.yamux import HEADER_SIZE, TYPE_DATA, YAMUX_HEADER_FORMAT

Frame = tuple[int, int, int, bytes]
"""(type, flags, stream id, payload: a DATA frame's bytes, else b"")."""


def yamux_frames(message: bytes) -> list[Frame]:
    """The Yamux frames in `message`, in order."""
    out: list[Frame] = []
    at = 0
    while at + HEADER_SIZE <= len(message):
        _v, kind, flags, sid, length = struct.unpack_from(YAMUX_HEADER_FORMAT, message, at)
        at += HEADER_SIZE
        payload = message[at:at + length] if kind == TYPE_DATA else b""
        at += len(payload)
        out.append((kind, flags, sid, payload))
    return out
