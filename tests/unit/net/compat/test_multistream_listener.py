"""Multistream-select, listener side: stock py-libp2p 0.8.1 writes its header and its
echo separately; with the workaround, a dialer that pipelined its proposal gets both in
one write, and a lock-step dialer (which waits for our header) gets libp2p's order.
Real hosts: tests/integration/test_net_pipelined.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from libp2p.custom_types import TProtocol
from libp2p.protocol_muxer.exceptions import MultiselectError
from libp2p.protocol_muxer.multiselect import Multiselect
from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator
from libp2p.utils.varint import encode_delim

from p2pinfer.net import compat
from p2pinfer.net.compat import multistream_listener
from p2pinfer.net.compat.multistream_listener import MAX_COMMANDS, negotiate_in_one_write
from p2pinfer.net.streams import UNSENT_ATTR
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

JOB = "/p2pinfer/job/1.0.0"
OTHER = "/p2pinfer/other/1.0.0"
REQUEST = b"\x10a signed request"


def delim(text: str) -> bytes:
    return encode_delim(text.encode())


HEADER = delim("/multistream/1.0.0")


class DialerStream:
    """An inbound Yamux-like stream: the dialer has sent `sent` (which the muxer holds in
    its per-stream buffer, as py-libp2p's does) and sends `after_our_first_write` once
    it hears from us (what a lock-step dialer does). Our writes are recorded."""

    def __init__(self, sent: bytes, after_our_first_write: bytes = b"") -> None:
        self.unread = bytearray(sent)
        self.later = after_our_first_write
        self.muxed_stream = SimpleNamespace(
            stream_id=3, conn=SimpleNamespace(stream_buffers={3: self.unread}))
        self.writes: list[bytes] = []

    async def read(self, n: int | None = None) -> bytes:
        size = len(self.unread) if n is None or n < 0 else n
        chunk = bytes(self.unread[:size])
        del self.unread[:size]
        return chunk

    async def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.unread += self.later
        self.later = b""


async def handler(stream: Any) -> None:
    raise AssertionError("negotiation never runs the handler")


def listener(*, echo_with_answer: tuple[str, ...] = ()) -> Multiselect:
    mux = Multiselect({TProtocol(JOB): handler, TProtocol(OTHER): handler})
    for protocol in echo_with_answer:
        multistream_listener.echo_with_answer(mux, protocol)
    return mux


async def negotiate(stream: DialerStream, how: Any = negotiate_in_one_write,
                    mux: Multiselect | None = None) -> object:
    protocol, found = await how(mux or listener(),
                                MultiselectCommunicator(stream))  # type: ignore[arg-type]
    assert found is handler
    return protocol


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(multistream_listener)


async def test_defect_stock_libp2p_answers_a_pipelined_proposal_in_two_writes() -> None:
    # If this fails, upstream writes its header with its answer: drop the workaround.
    stream = DialerStream(HEADER + delim(JOB) + REQUEST)
    assert await negotiate(stream, multistream_listener.ORIGINAL) == JOB
    assert stream.writes == [HEADER, delim(JOB)]


async def test_a_pipelined_proposal_gets_our_header_and_its_echo_in_one_write() -> None:
    stream = DialerStream(HEADER + delim(JOB) + REQUEST)
    assert await negotiate(stream) == JOB
    assert stream.writes == [HEADER + delim(JOB)]
    assert bytes(stream.unread) == REQUEST  # the request stays for the handler


async def test_an_answering_protocol_leaves_header_and_echo_for_the_handlers_first_write(
) -> None:
    stream = DialerStream(HEADER + delim(JOB) + REQUEST)
    assert await negotiate(stream, mux=listener(echo_with_answer=(JOB,))) == JOB
    assert stream.writes == []  # nothing yet: NetStream sends them with the answer
    assert getattr(stream, UNSENT_ATTR) == HEADER + delim(JOB)
    assert bytes(stream.unread) == REQUEST


async def test_an_answering_protocol_proposed_without_a_request_is_echoed_at_once() -> None:
    # A dialer that waits for the echo before it sends its request: waiting for the
    # handler's answer would deadlock.
    stream = DialerStream(HEADER + delim(JOB))
    assert await negotiate(stream, mux=listener(echo_with_answer=(JOB,))) == JOB
    assert stream.writes == [HEADER + delim(JOB)]
    assert not hasattr(stream, UNSENT_ATTR)


async def test_only_the_protocols_registered_as_answering_wait_for_the_handler() -> None:
    stream = DialerStream(HEADER + delim(OTHER) + REQUEST)
    assert await negotiate(stream, mux=listener(echo_with_answer=(JOB,))) == OTHER
    assert stream.writes == [HEADER + delim(OTHER)]


async def test_a_lock_step_dialer_gets_our_header_before_it_proposes() -> None:
    # It sent its header and waits for ours: waiting for its proposal would deadlock.
    stream = DialerStream(HEADER, after_our_first_write=delim(JOB))
    assert await negotiate(stream) == JOB
    assert stream.writes == [HEADER, delim(JOB)]


async def test_an_unknown_proposal_gets_na_with_our_header_then_the_next_is_echoed() -> None:
    stream = DialerStream(HEADER + delim("/nobody/1.0.0"), after_our_first_write=delim(OTHER))
    assert await negotiate(stream) == OTHER
    assert stream.writes == [HEADER + delim("na"), delim(OTHER)]


async def test_ls_is_answered_with_our_header_then_the_proposal_is_echoed() -> None:
    stream = DialerStream(HEADER + delim("ls"), after_our_first_write=delim(JOB))
    assert await negotiate(stream) == JOB
    assert stream.writes == [HEADER + delim(f"{JOB}\n{OTHER}\n"), delim(JOB)]


async def test_a_wrong_header_is_refused_after_ours_went_out_as_libp2p_does() -> None:
    stream = DialerStream(delim("/multistream/9.9.9") + delim(JOB))
    with pytest.raises(MultiselectError, match="protocol ID mismatch"):
        await negotiate(stream)
    assert stream.writes == [HEADER]


async def test_a_stream_that_is_not_yamux_gets_libp2ps_negotiation() -> None:
    stream = DialerStream(HEADER + delim(JOB))
    del stream.muxed_stream
    assert await negotiate(stream) == JOB
    assert stream.writes == [HEADER, delim(JOB)]


async def test_a_dialer_that_leaves_mid_negotiation_is_a_multiselect_error() -> None:
    stream = DialerStream(HEADER + delim("/nobody/1.0.0"))  # then nothing more, ever
    with pytest.raises(MultiselectError):
        await negotiate(stream)


def test_install_is_idempotent_and_replaces_the_method() -> None:
    compat.install()
    compat.install()
    assert Multiselect.negotiate is negotiate_in_one_write


async def test_commands_in_a_loop_are_cut_off_pipelined_or_lock_step() -> None:
    """Attack 61: negotiation answered every command a stream sent for as long as its
    10 s lasted: 20,000 `ls` (80 KB, one write) got 4.2 MB of listings back, ~5 CPU-s.
    Now a stream may send MAX_COMMANDS commands; then it is refused."""
    flood = b"".join(delim("ls") for _ in range(2_000))
    for sent, later in ((HEADER + flood, b""), (HEADER, flood)):  # pipelined; lock-step
        stream = DialerStream(sent, after_our_first_write=later)
        with pytest.raises(MultiselectError, match="commands"):
            await negotiate(stream)
        listings = sum(write.count(b"\n/p2pinfer/other") for write in stream.writes)
        assert listings <= MAX_COMMANDS  # 2,000 on the old code
    # Within the bound, unknown proposals then a known one are answered as before.
    tries = b"".join(delim(f"/nobody/{n}") for n in range(MAX_COMMANDS - 1))
    assert await negotiate(DialerStream(HEADER + tries + delim(OTHER))) == OTHER
