"""Length-prefixed frames: an unsigned LEB128 varint length, then that many bytes.

The same format as py-libp2p's `encode_varint_prefixed` /
`read_varint_prefixed_bytes_limited`, so either side may use either. The
decoder checks the announced length against its limit as soon as the header
is read (or as soon as a partial header already exceeds it), so a peer cannot
make us buffer a body we will refuse.
"""

from __future__ import annotations

from p2pinfer.errors import DecodeError, FrameTooLarge, ProtocolError

DEFAULT_MAX_FRAME = 1 << 20
"""1 MiB: the largest frame body accepted unless a caller says otherwise."""


def encode_uvarint(value: int) -> bytes:
    """The shortest unsigned LEB128 encoding of `value` (0 <= value < 2**64)."""
    if not 0 <= value < 2**64:
        raise ValueError("a uvarint holds 0..2**64-1")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_frame(body: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """`body` with its length prefix; FrameTooLarge if it is over `max_frame`."""
    if len(body) > max_frame:
        raise FrameTooLarge(f"frame of {len(body)} bytes is over the {max_frame}-byte limit")
    return encode_uvarint(len(body)) + body


class FrameDecoder:
    """Sans-IO frame splitter: feed it bytes as they arrive, get whole frame bodies back.

    After an error the decoder stays broken and raises that error again: a
    stream that sent one bad frame cannot be resynchronised and must be closed.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if not 0 <= max_frame < 2**63:
            raise ValueError("max_frame must be in 0..2**63-1")
        self._max = max_frame
        self._buf = bytearray()
        self._want: int | None = None  # body length of the frame being read, once known
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next bytes of the stream; return the frames they complete, in order.
        Raises FrameTooLarge (over the limit) or DecodeError (malformed header)."""
        if self._error is not None:
            raise self._error
        frames: list[bytes] = []
        view = memoryview(data)
        try:
            while True:
                if self._want is None:
                    # Take header bytes one at a time: _parse_header refuses an oversize
                    # length (so also an overlong header) as early as it can tell.
                    while self._want is None and view:
                        self._buf.append(view[0])
                        view = view[1:]
                        self._want = self._parse_header()
                    if self._want is None:
                        return frames
                    self._buf.clear()
                take = min(self._want - len(self._buf), len(view))
                self._buf += view[:take]
                view = view[take:]
                if len(self._buf) < self._want:
                    return frames
                frames.append(bytes(self._buf))
                self._buf.clear()
                self._want = None
        except ProtocolError as exc:
            self._error = exc
            self._buf = bytearray()
            raise

    def eof(self) -> None:
        """The stream ended: DecodeError if it stopped in the middle of a frame."""
        if self._error is not None:
            raise self._error
        if self._buf or self._want is not None:
            raise DecodeError("stream ended in the middle of a frame")

    def _parse_header(self) -> int | None:
        """The body length once `_buf` holds a whole header, else None."""
        value = 0
        for i, byte in enumerate(self._buf):
            value |= (byte & 0x7F) << (7 * i)
            if value > self._max:
                raise FrameTooLarge(f"frame header announces more than the {self._max}-byte limit")
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    raise DecodeError("frame header is not a minimal varint")
                return value
            # Another byte follows, so a minimal varint is at least 2**(7 * (i + 1)).
            if 1 << (7 * (i + 1)) > self._max:
                raise FrameTooLarge(f"frame header announces more than the {self._max}-byte limit")
        return None
