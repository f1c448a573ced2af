"""Length-prefixed framing: libp2p-compatible, bounded before allocation, robust to junk."""

from __future__ import annotations

import random
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st
from libp2p.io.exceptions import MessageTooLarge
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from p2pinfer.errors import DecodeError, FrameTooLarge, ProtocolError
from p2pinfer.protocol import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame, encode_uvarint
from tests.support.readers import BytesReader


def split_randomly(data: bytes, rng: random.Random) -> list[bytes]:
    pieces, i = [], 0
    while i < len(data):
        step = rng.randint(1, 40)
        pieces.append(data[i : i + step])
        i += step
    return pieces


@given(st.binary(max_size=5_000))
def test_encode_frame_matches_py_libp2p(body: bytes) -> None:
    assert encode_frame(body) == encode_varint_prefixed(body)


@given(st.binary(max_size=5_000))
async def test_py_libp2p_reads_our_frames(body: bytes) -> None:
    got = await read_varint_prefixed_bytes_limited(BytesReader(encode_frame(body)), 10_000)
    assert got == body


async def test_py_libp2p_refuses_what_we_refuse() -> None:
    header = encode_uvarint(DEFAULT_MAX_FRAME + 1)
    with pytest.raises(MessageTooLarge):
        await read_varint_prefixed_bytes_limited(BytesReader(header), DEFAULT_MAX_FRAME)
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(header)


@given(st.lists(st.binary(max_size=300), max_size=10), st.randoms(use_true_random=False))
def test_frames_come_back_whole_however_the_stream_is_split(
    bodies: list[bytes], rng: random.Random
) -> None:
    stream = b"".join(encode_frame(b) for b in bodies)
    decoder = FrameDecoder()
    got: list[bytes] = []
    for piece in split_randomly(stream, rng):
        got.extend(decoder.feed(piece))
    assert got == bodies
    assert decoder.buffered == 0
    decoder.eof()


def test_a_2_gib_header_is_refused_without_allocating_it() -> None:
    header = encode_uvarint(2 * 1024**3)
    decoder = FrameDecoder()
    tracemalloc.start()
    try:
        with pytest.raises(FrameTooLarge, match="1048576-byte limit"):
            decoder.feed(header + b"x" * 1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    assert decoder.buffered == 0


def test_an_oversize_header_is_refused_before_it_is_complete() -> None:
    header = encode_uvarint(2 * 1024**3)
    decoder = FrameDecoder()
    # 2 GiB needs 5 varint bytes; the first 3 already announce more than 1 MiB.
    assert decoder.feed(header[:2]) == []
    with pytest.raises(FrameTooLarge):
        decoder.feed(header[2:3])


def test_the_limit_is_inclusive() -> None:
    decoder = FrameDecoder(max_frame=100)
    assert decoder.feed(encode_frame(b"a" * 100, max_frame=100)) == [b"a" * 100]
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_uvarint(101))
    with pytest.raises(FrameTooLarge):
        encode_frame(b"a" * 101, max_frame=100)


def test_an_empty_frame_is_a_frame() -> None:
    assert FrameDecoder().feed(b"\x00\x00\x01z") == [b"", b"", b"z"]


def test_a_non_minimal_header_is_refused() -> None:
    with pytest.raises(DecodeError, match="minimal"):
        FrameDecoder().feed(b"\x81\x00x")


def test_a_header_longer_than_a_64_bit_varint_is_refused() -> None:
    with pytest.raises(FrameTooLarge):
        FrameDecoder(max_frame=2**63 - 1).feed(b"\x81" * 10 + b"\x01")


def test_a_stream_that_ends_mid_frame_is_an_error() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(b"hello")[:-1]) == []
    with pytest.raises(DecodeError, match="middle of a frame"):
        decoder.eof()


def test_after_an_error_the_decoder_stays_broken() -> None:
    decoder = FrameDecoder(max_frame=10)
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"\x0b")
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_frame(b"ok"))


def test_ten_thousand_random_streams_raise_only_protocol_errors() -> None:
    rng = random.Random(2)
    for _ in range(10_000):
        decoder = FrameDecoder(max_frame=rng.choice([0, 10, 1000, DEFAULT_MAX_FRAME]))
        try:
            for piece in split_randomly(rng.randbytes(rng.randrange(0, 200)), rng):
                for frame in decoder.feed(piece):
                    assert len(frame) <= DEFAULT_MAX_FRAME
            decoder.eof()
        except ProtocolError:
            pass


def test_uvarint_matches_the_spec_examples() -> None:
    assert encode_uvarint(0) == b"\x00"
    assert encode_uvarint(127) == b"\x7f"
    assert encode_uvarint(128) == b"\x80\x01"
    assert encode_uvarint(300) == b"\xac\x02"
    with pytest.raises(ValueError):
        encode_uvarint(-1)
