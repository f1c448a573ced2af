"""Pipelined multistream-select: what the opener sends, how it reads the answers, and that
py-libp2p's own (stock) responder leaves the pipelined request for the handler."""

from __future__ import annotations

import pytest
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.protocol_muxer.multiselect import Multiselect
from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator
from libp2p.utils.varint import encode_delim

from p2pinfer.errors import DecodeError, ProtocolNotSupportedError, StreamClosedError
from p2pinfer.net.compat import multistream as compat_multistream
from p2pinfer.net.compat.multistream import MULTISTREAM_ID, open_pipelined, proposal
from p2pinfer.protocol import encode_frame, encode_uvarint
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

JOB = "/p2pinfer/job/1.0.0"
REQUEST = encode_frame(b"a signed request\n")  # ends in a newline, like a delimited message


class FakeConnection:
    """The muxed connection under a FakePeerStream: up, or already closed."""

    def __init__(self, *, closed: bool) -> None:
        self.is_closed = closed


class FakePeerStream:
    """A stream whose peer has already sent `incoming`, then reset or closed it; records
    what we write and the protocol set on it. Reads return at most `n` bytes, as
    py-libp2p's Yamux stream does."""

    def __init__(self, incoming: bytes, *, connection_closed: bool = False) -> None:
        self.muxed_conn = FakeConnection(closed=connection_closed)
        self.incoming = incoming
        self.consumed = 0
        self.written = b""
        self.protocol: str | None = None

    async def read(self, n: int | None = None) -> bytes:
        if self.consumed >= len(self.incoming):
            raise StreamEOF("eof")
        size = len(self.incoming) if n is None or n < 0 else n
        chunk = self.incoming[self.consumed:self.consumed + size]
        self.consumed += len(chunk)
        return chunk

    async def write(self, data: bytes) -> None:
        self.written += data

    def set_protocol(self, protocol: str) -> None:
        self.protocol = protocol

    @property
    def unread(self) -> bytes:
        return self.incoming[self.consumed:]


def delim(text: str) -> bytes:
    return encode_delim(text.encode())


async def test_the_proposal_and_the_request_go_out_in_one_write_before_any_read() -> None:
    peer = FakePeerStream(delim(MULTISTREAM_ID) + delim(JOB) + encode_frame(b"accepted"))
    stream = await open_pipelined(peer, JOB, REQUEST, timeout_s=5)
    assert peer.written == delim(MULTISTREAM_ID) + delim(JOB) + REQUEST
    assert peer.protocol == JOB and stream.first_sent_at is not None
    # Positioned after the two echoes: the answer to the request is next.
    assert await stream.read_frame(timeout_s=5) == b"accepted"


async def test_na_is_a_clear_protocol_not_supported_error() -> None:
    peer = FakePeerStream(delim(MULTISTREAM_ID) + delim("na"))
    with pytest.raises(ProtocolNotSupportedError, match=f"does not support {JOB}"):
        await open_pipelined(peer, JOB, REQUEST, timeout_s=5)
    assert peer.protocol is None


@pytest.mark.parametrize("before_reset", [b"", delim(MULTISTREAM_ID)])
async def test_a_reset_before_the_echo_means_the_protocol_is_not_supported(
    before_reset: bytes,
) -> None:
    peer = FakePeerStream(before_reset)
    with pytest.raises(ProtocolNotSupportedError, match=f"does not support {JOB}: it reset"):
        await open_pipelined(peer, JOB, REQUEST, timeout_s=5)
    assert peer.protocol is None


async def test_a_stream_cut_with_its_connection_is_not_a_refused_protocol() -> None:
    peer = FakePeerStream(delim(MULTISTREAM_ID), connection_closed=True)
    with pytest.raises(StreamClosedError):
        await open_pipelined(peer, JOB, REQUEST, timeout_s=5)


@pytest.mark.parametrize("answer", [
    delim("/multistream/2.0.0") + delim(JOB),  # another multistream version
    delim(MULTISTREAM_ID) + delim("/p2pinfer/job/9.0.0"),  # echoed something else
    delim(MULTISTREAM_ID) + encode_frame(JOB.encode()),  # no newline
    b"\x00",  # an empty message
])
async def test_a_reply_that_is_not_the_echo_is_a_decode_error(answer: bytes) -> None:
    peer = FakePeerStream(answer)
    with pytest.raises(DecodeError):
        await open_pipelined(peer, JOB, REQUEST, timeout_s=5)
    assert peer.protocol is None


async def test_an_oversized_negotiation_reply_is_refused_before_its_body_is_read() -> None:
    header = encode_uvarint(1 << 20)
    peer = FakePeerStream(header + b"x" * 4096)
    with pytest.raises(DecodeError):
        await open_pipelined(peer, JOB, REQUEST, timeout_s=5)
    # Read: at most what an accepting answer takes (both echoes), never the announced body.
    assert peer.consumed <= len(proposal(JOB))


async def test_py_libp2p_responder_selects_the_protocol_and_leaves_the_request_unread() -> None:
    async def handler(stream: object) -> None:
        raise AssertionError("negotiation alone must not run the handler")

    opener = FakePeerStream(proposal(JOB) + REQUEST)
    protocol, chosen = await Multiselect({JOB: handler}).negotiate(  # type: ignore[dict-item]
        MultiselectCommunicator(opener))  # type: ignore[arg-type]
    assert (protocol, chosen) == (JOB, handler)
    assert opener.written == delim(MULTISTREAM_ID) + delim(JOB)
    assert opener.unread == REQUEST  # exactly one message read at a time


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    # Lock-step negotiation (MultiselectClient) and the stock responder (Multiselect), which
    # the pipelined opener relies on reading one message at a time, are what we tested.
    assert_written_for_installed_libp2p(compat_multistream)


class ResetAfterFirstRead(FakePeerStream):
    """A peer that sent its header and echo at once and reset the stream right after
    (a request refused unread): py-libp2p discards a reset stream's unread bytes, so
    everything not taken by the first read is lost."""

    def __init__(self, incoming: bytes) -> None:
        super().__init__(incoming)
        self.reads = 0

    async def read(self, n: int | None = None) -> bytes:
        self.reads += 1
        if self.reads > 1:
            raise StreamReset("reset")
        return await super().read(n)


async def test_an_accept_then_reset_is_a_closed_stream_not_a_refused_protocol() -> None:
    peer = ResetAfterFirstRead(delim(MULTISTREAM_ID) + delim(JOB))
    stream = await open_pipelined(peer, JOB, REQUEST, timeout_s=5)  # both echoes in one read
    assert peer.protocol == JOB
    with pytest.raises(StreamClosedError):
        await stream.read_frame(timeout_s=5)
