"""A new Yamux stream's SYN and the ACK answering it: stock py-libp2p 0.8.1 writes each on
its own; with the workaround they go out in front of the stream's next frame, in the same
write (the SYN only inside `lazy_syn()`). Real hosts: tests/integration/test_net_pipelined.py
(one encrypted message each way)."""

from __future__ import annotations

import struct

from libp2p.peer.id import ID
from libp2p.stream_muxer.yamux.yamux import (
    FLAG_ACK,
    FLAG_RST,
    FLAG_SYN,
    TYPE_DATA,
    TYPE_WINDOW_UPDATE,
    YAMUX_HEADER_FORMAT,
    Yamux,
)

from p2pinfer.net import compat
from p2pinfer.net.compat import yamux_open
from p2pinfer.net.compat.yamux_open import lazy_syn
from tests.support.yamux_frames import yamux_frames
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p


class RecordingSecureConn:
    """The encrypted connection under a Yamux session: each write (one Noise message)
    is recorded."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.is_initiator = True

    async def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))


def session() -> tuple[Yamux, RecordingSecureConn]:
    compat.install()
    conn = RecordingSecureConn()
    return Yamux(conn, ID(b"\x00\x01p"), is_initiator=True), conn  # type: ignore[arg-type]


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(yamux_open)


async def test_defect_stock_open_stream_writes_the_syn_alone() -> None:
    # If this fails, upstream sends the SYN lazily: drop the workaround.
    yamux, conn = session()
    yamux._write_frame = yamux_open.ORIGINAL.__get__(yamux)  # type: ignore[method-assign]
    stream = await yamux.open_stream()
    await stream.write(b"hello")
    assert [yamux_frames(w) for w in conn.writes] == [
        [(TYPE_WINDOW_UPDATE, FLAG_SYN, stream.stream_id, b"")],
        [(TYPE_DATA, 0, stream.stream_id, b"hello")],
    ]


async def test_inside_lazy_syn_the_syn_leaves_with_the_first_data_in_one_write() -> None:
    yamux, conn = session()
    with lazy_syn():
        stream = await yamux.open_stream()
    assert conn.writes == []
    await stream.write(b"hello")
    await stream.write(b"again")
    assert [yamux_frames(w) for w in conn.writes] == [
        [(TYPE_DATA, FLAG_SYN, stream.stream_id, b"hello")],  # one frame: the peer's
        [(TYPE_DATA, 0, stream.stream_id, b"again")],         # stream opens with its data
    ]


async def test_a_stream_reset_before_writing_sends_its_syn_then_the_reset() -> None:
    yamux, conn = session()
    with lazy_syn():
        stream = await yamux.open_stream()
    await stream.reset()
    [message] = conn.writes
    assert [(kind, flags) for kind, flags, _, _ in yamux_frames(message)] == [
        (TYPE_WINDOW_UPDATE, FLAG_SYN), (TYPE_WINDOW_UPDATE, FLAG_RST)]


async def test_only_the_streams_opened_inside_the_block_wait_and_each_keeps_its_own() -> None:
    yamux, conn = session()
    with lazy_syn():
        first = await yamux.open_stream()
        second = await yamux.open_stream()
    outside = await yamux.open_stream()  # libp2p's order: its SYN at once
    assert [yamux_frames(w)[0][2] for w in conn.writes] == [outside.stream_id]
    await second.write(b"2")
    await first.write(b"1")
    assert [yamux_frames(w) for w in conn.writes[1:]] == [
        [(TYPE_DATA, FLAG_SYN, second.stream_id, b"2")],
        [(TYPE_DATA, FLAG_SYN, first.stream_id, b"1")],
    ]


def ack(stream_id: int) -> bytes:
    """The frame py-libp2p's read loop answers a peer's SYN with."""
    return struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_WINDOW_UPDATE, FLAG_ACK, stream_id, 0)


def data(stream_id: int, payload: bytes) -> bytes:
    return struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_DATA, 0, stream_id, len(payload)) + payload


async def test_defect_stock_libp2p_writes_the_ack_alone() -> None:
    yamux, conn = session()
    await yamux_open.ORIGINAL(yamux, ack(2))
    assert conn.writes == [ack(2)]


async def test_the_ack_leaves_with_the_streams_first_answer() -> None:
    yamux, conn = session()
    await yamux._write_frame(ack(2))  # what handle_incoming writes on a SYN
    await yamux._write_frame(ack(4))
    assert conn.writes == []
    await yamux._write_frame(data(4, b"echo"))
    await yamux._write_frame(data(2, b"echo"))
    await yamux._write_frame(data(2, b"more"))
    assert conn.writes == [ack(4) + data(4, b"echo"), ack(2) + data(2, b"echo"),
                           data(2, b"more")]


async def test_a_peer_opening_streams_it_never_uses_cannot_grow_what_is_held() -> None:
    yamux, conn = session()
    for stream_id in range(2, 2 * yamux_open.MAX_HELD + 2, 2):
        yamux.streams[stream_id] = None  # type: ignore[assignment]  # open, never answered
        await yamux._write_frame(ack(stream_id))
    assert conn.writes == []
    await yamux._write_frame(ack(10_000))  # one too many: written at once, as libp2p does
    assert conn.writes == [ack(10_000)]


async def test_the_frames_of_streams_that_ended_make_room() -> None:
    yamux, conn = session()
    for stream_id in range(2, 2 * yamux_open.MAX_HELD + 2, 2):
        await yamux._write_frame(ack(stream_id))  # none of them is a stream now
    await yamux._write_frame(ack(10_000))
    assert conn.writes == []  # the ended streams' ACKs were dropped, this one waits
