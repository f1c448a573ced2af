"""Frame reading on a stream: the limit is enforced before the body is read."""

from __future__ import annotations

import pytest
import trio
from libp2p.network.stream.exceptions import StreamEOF, StreamReset

from p2pinfer.errors import (
    DecodeError,
    FrameTooLarge,
    PeerTimeoutError,
    StateError,
    StreamClosedError,
)
from p2pinfer.net.streams import UNSENT_ATTR, NetStream
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


class SplicingRawStream:
    """A py-libp2p stream double for `splice`: reads serve `data` (then end, or wait for
    `ended`), writes are kept (or wait for `unblock` while `blocked`), close is seen."""

    def __init__(self, data: bytes = b"", *, blocked: bool = False,
                 broken: bool = False) -> None:
        self.data = data
        self.written = b""
        self.closed = False
        self.ended = trio.Event()
        self.unblock = trio.Event()
        self.blocked = blocked
        self.broken = broken

    async def read(self, n: int) -> bytes:
        if not self.data:
            await self.ended.wait()
            raise StreamEOF("eof")
        chunk, self.data = self.data[:3], self.data[3:]
        return chunk

    async def write(self, data: bytes) -> None:
        if self.broken:
            raise StreamReset("reset")
        if self.blocked:
            await self.unblock.wait()
        self.written += data

    async def close(self) -> None:
        self.closed = self.fully_closed = True

    async def close_write(self) -> None:
        self.closed = True

    fully_closed = False


async def read_all(stream: NetStream) -> bytes:
    out = b""
    while data := await stream.read_some(timeout_s=5):
        out += data
    return out


async def test_a_spliced_stream_reads_the_old_stream_to_its_end_then_the_new_one() -> None:
    old, new = SplicingRawStream(b"old bytes "), SplicingRawStream(b"new bytes")
    stream = NetStream(old)  # type: ignore[arg-type]
    assert await stream.read_some(timeout_s=5) == b"old"
    await stream.splice(NetStream(new))  # type: ignore[arg-type]
    # Half-closed only: py-libp2p's close() would unregister it from its connection, which
    # may then be closed (a relay leg) with its last bytes still unread; ...
    assert old.closed and not old.fully_closed
    old.ended.set()
    new.ended.set()
    # The new stream had its bytes ready all along: none come before the old one's last.
    assert await read_all(stream) == b" bytes new bytes"
    assert stream.spliced and not new.closed
    assert old.fully_closed  # ... once its end is read, it may leave


async def test_writes_after_a_splice_go_to_the_new_stream_behind_its_first_bytes() -> None:
    old, new = SplicingRawStream(), SplicingRawStream()
    stream = NetStream(old)  # type: ignore[arg-type]
    await stream.write(b"before")
    await stream.splice(NetStream(new), first=b"ack;")  # type: ignore[arg-type]
    await stream.write(b"after")
    assert old.written == b"before" and old.closed
    assert new.written == b"ack;after"
    await stream.close()
    assert new.closed


async def test_a_splice_waits_for_a_write_in_flight_and_gives_up_after_its_bound() -> None:
    old, new = SplicingRawStream(blocked=True), SplicingRawStream()
    stream = NetStream(old)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.write, b"chunk")
        await trio.sleep(0.01)
        with pytest.raises(PeerTimeoutError):
            await stream.splice(NetStream(new), first=b"ack", timeout_s=0.05)  # type: ignore[arg-type]
        assert not stream.spliced and new.written == b""  # nothing moved
        old.unblock.set()
    await stream.splice(NetStream(new), first=b"ack")  # type: ignore[arg-type]
    assert old.written == b"chunk" and new.written == b"ack"


async def test_a_splice_whose_first_bytes_fail_leaves_the_stream_where_it_was() -> None:
    old, new = SplicingRawStream(), SplicingRawStream(broken=True)
    stream = NetStream(old)  # type: ignore[arg-type]
    with pytest.raises(StreamClosedError):
        await stream.splice(NetStream(new), first=b"ack")  # type: ignore[arg-type]
    await stream.write(b"still here")
    assert old.written == b"still here" and not old.closed and not stream.spliced


async def test_a_stream_is_spliced_once() -> None:
    stream = NetStream(SplicingRawStream())  # type: ignore[arg-type]
    await stream.splice(NetStream(SplicingRawStream()))  # type: ignore[arg-type]
    with pytest.raises(StateError):
        await stream.splice(NetStream(SplicingRawStream()))  # type: ignore[arg-type]


class ClosableRawStream(FakeRawStream):
    """A FakeRawStream that records close and reset, each after what was written."""

    def __init__(self, data: bytes = b"", **kwargs: str) -> None:
        super().__init__(data, **kwargs)
        self.ends: list[tuple[str, bytes]] = []

    async def close(self) -> None:
        self.ends.append(("close", self.written))

    async def reset(self) -> None:
        self.ends.append(("reset", self.written))


def with_unsent(raw: ClosableRawStream, unsent: bytes) -> ClosableRawStream:
    setattr(raw, UNSENT_ATTR, unsent)  # as compat.multistream_listener leaves it
    return raw


async def test_negotiation_bytes_left_unsent_go_out_in_front_of_the_first_write() -> None:
    raw = with_unsent(ClosableRawStream(), b"<echo>")
    stream = NetStream(raw)
    assert stream.unsent and not hasattr(raw, UNSENT_ATTR)
    await stream.write(b"<accept>")
    await stream.write(b"<chunk>")
    assert raw.written == b"<echo><accept><chunk>" and not stream.unsent


async def test_flush_sends_them_alone_once_and_close_sends_them_before_closing() -> None:
    raw = with_unsent(ClosableRawStream(), b"<echo>")
    stream = NetStream(raw)
    await stream.flush()
    await stream.flush()
    assert raw.written == b"<echo>"
    raw = with_unsent(ClosableRawStream(), b"<echo>")
    await NetStream(raw).close()  # a handler that never wrote: the dialer still hears
    assert raw.ends == [("close", b"<echo>")]


async def test_a_reset_stream_sends_nothing_and_a_plain_stream_flushes_nothing() -> None:
    raw = with_unsent(ClosableRawStream(), b"<echo>")
    stream = NetStream(raw)
    await stream.reset()
    await stream.close()
    assert raw.written == b""
    plain = ClosableRawStream()
    await NetStream(plain).flush()
    assert plain.written == b"" and not NetStream(plain).unsent
