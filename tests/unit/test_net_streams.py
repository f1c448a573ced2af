"""Frame reading on a stream: the limit is enforced before the body is read."""

from __future__ import annotations

import pytest
import trio
from libp2p.network.stream.exceptions import StreamEOF, StreamReset

from p2pinfer.errors import DecodeError, FrameTooLarge, PeerTimeoutError, StreamClosedError
from p2pinfer.net.streams import NetStream
from p2pinfer.protocol import encode_frame, encode_uvarint


class FakeRawStream:
    """Serves fixed bytes the way a py-libp2p stream does, then ends or stalls."""

    def __init__(self, data: bytes, *, then: str = "eof") -> None:
        self.data = data
        self.consumed = 0
        self.then = then
        self.written = b""

    async def read(self, n: int) -> bytes:
        if self.consumed >= len(self.data):
            if self.then == "stall":
                await trio.sleep_forever()
            raise StreamReset("reset") if self.then == "reset" else StreamEOF("eof")
        chunk = self.data[self.consumed : self.consumed + min(n, 7)]  # short reads too
        self.consumed += len(chunk)
        return chunk

    async def write(self, data: bytes) -> None:
        self.written += data


async def test_frames_round_trip_in_order() -> None:
    raw = FakeRawStream(encode_frame(b"") + encode_frame(b"hello") + encode_frame(b"x" * 1000))
    stream = NetStream(raw)
    assert await stream.read_frame() == b""
    assert await stream.read_frame() == b"hello"
    assert await stream.read_frame() == b"x" * 1000
    with pytest.raises(StreamClosedError):
        await stream.read_frame()


async def test_oversized_frame_is_refused_before_its_body_is_read() -> None:
    header = encode_uvarint(1 << 20)
    raw = FakeRawStream(header + b"y" * 4096)
    with pytest.raises(FrameTooLarge):
        await NetStream(raw).read_frame(max_size=1024)
    assert raw.consumed == len(header)


async def test_stream_ending_inside_a_frame_is_a_closed_stream() -> None:
    raw = FakeRawStream(encode_frame(b"abcdef")[:4])
    with pytest.raises(StreamClosedError):
        await NetStream(raw).read_frame()


async def test_reset_stream_is_a_closed_stream() -> None:
    with pytest.raises(StreamClosedError):
        await NetStream(FakeRawStream(b"", then="reset")).read_frame()


async def test_silent_peer_times_out() -> None:
    with trio.fail_after(5), pytest.raises(PeerTimeoutError):
        await NetStream(FakeRawStream(b"\x05ab", then="stall")).read_frame(timeout_s=0.05)


async def test_overlong_or_non_minimal_length_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        await NetStream(FakeRawStream(b"\xff" * 11)).read_frame(max_size=2**64)
    with pytest.raises(DecodeError):
        await NetStream(FakeRawStream(b"\x80\x00")).read_frame()


async def test_write_frame_prefixes_the_length() -> None:
    raw = FakeRawStream(b"")
    await NetStream(raw).write_frame(b"abc")
    assert raw.written == b"\x03abc"


async def test_frame_over_the_limit_is_not_sent() -> None:
    raw = FakeRawStream(b"")
    with pytest.raises(FrameTooLarge):
        await NetStream(raw).write_frame(b"z" * 11, max_size=10)
    assert raw.written == b""
