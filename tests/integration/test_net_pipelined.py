"""Pipelined protocol negotiation between real hosts: the request leaves with the protocol
proposal, so a job's first answer is one wait for the peer away instead of three; a peer
that does not speak the protocol is a clear error and the job goes to the next provider."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pinfer.errors import (
    PeerUnreachableError,
    ProtocolNotSupportedError,
    StreamClosedError,
)
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.job_server import JobServer, JobServerConfig
from p2pinfer.net.compat.multistream import proposal
from p2pinfer.net.config import NetConfig, parse_peer_id
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.streams import NetStream
from p2pinfer.protocol import (
    JOB_PROTOCOL_ID,
    FrameDecoder,
    JobAccept,
    JobParams,
    JobRequest,
    decode_as,
)
from tests.integration.job_helpers import (
    FAKE_MODEL,
    FakeBackend,
    advert_for,
    queued_behind_a_running_job,
    start_consumer,
    start_provider,
    wait_for_providers,
)
from tests.integration.net_helpers import config
from tests.support.raw_jobs import first_answer, signed_request
from tests.support.refusing_responder import refuse_protocol
from tests.support.yamux_frames import Frame, yamux_frames

pytestmark = pytest.mark.network

ECHO = "/p2pinfer-test/echo/1.0.0"


class RecordingStream:
    """A real libp2p stream, passed through untouched; notes every write and read in `ops`."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.ops: list[tuple[str, bytes]] = []

    async def write(self, data: bytes) -> None:
        self.ops.append(("write", bytes(data)))
        await self._raw.write(data)

    async def read(self, n: int | None = None) -> bytes:
        data = await self._raw.read(n)
        self.ops.append(("read", bytes(data)))
        return bytes(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def wrote(self, protocol: str) -> bool:
        return any(kind == "write" and protocol.encode() in data for kind, data in self.ops)


def record_streams(net: NetHost, monkeypatch: pytest.MonkeyPatch) -> list[RecordingStream]:
    """Every stream `net` opens from now on (pipelined or py-libp2p's own new_stream, which
    both get their muxed stream from the network) is a RecordingStream, listed here."""
    network = net._host.get_network()
    opened: list[RecordingStream] = []
    original: Callable[[Any], Awaitable[Any]] = network.new_stream

    async def recording_new_stream(peer_id: Any) -> RecordingStream:
        stream = RecordingStream(await original(peer_id))
        opened.append(stream)
        return stream

    monkeypatch.setattr(network, "new_stream", recording_new_stream)
    return opened


def waits_for_peer(ops: list[tuple[str, bytes]]) -> int:
    """Round trips: how often the opener went from writing to reading (waiting for the
    peer's answer to what it had just sent)."""
    return sum(1 for a, b in itertools.pairwise(ops) if a[0] == "write" and b[0] == "read")


async def echo(stream: NetStream) -> None:
    assert stream.protocol == ECHO
    while True:
        try:
            frame = await stream.read_frame(timeout_s=5)
        except StreamClosedError:
            return
        await stream.write_frame(frame)


async def test_a_jobs_request_leaves_with_the_protocol_proposal_and_its_answer_is_one_wait_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, FakeBackend(), tmp_path)
            net, client, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            await client.candidates(FAKE_MODEL)  # the RTT probe (info) is not the job's
            opened = record_streams(net, monkeypatch)

            async with client.job(FAKE_MODEL, "go", JobParams(max_tokens=5)) as job:
                first = await job.next_delta()
                [stream] = [s for s in opened if s.wrote(JOB_PROTOCOL_ID)]
                until_first_token = list(stream.ops)
                rest = [d.text async for d in job]
            assert first is not None and first.text + "".join(rest) == "t0 t1 t2 t3 t4 "
            assert job.outcome is not None and job.outcome.provider == provider.net.peer_id

            # One write: the multistream header, the protocol id and the signed request.
            kind, sent = until_first_token[0]
            head = proposal(JOB_PROTOCOL_ID)
            assert kind == "write" and sent.startswith(head)
            [frame] = FrameDecoder().feed(sent[len(head):])
            request = decode_as(frame, JobRequest)
            assert request.msg.provider == provider.net.peer_id
            assert request.msg.job_id.hex() == job.outcome.job_id
            # Then only reads: the echoes, the accept and the first chunk.
            assert waits_for_peer(until_first_token) == 1
            assert [k for k, _ in until_first_token].count("write") == 1
            nursery.cancel_scope.cancel()


async def test_py_libp2p_lock_step_open_waits_for_the_peer_three_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control for the count above, and interop: a stock py-libp2p `new_stream` opener
    (header, echo, protocol id, echo, then the request) is still served by our job server."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, FakeBackend(), tmp_path)
            net, _, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            opened = record_streams(net, monkeypatch)

            raw = signed_request(NodeIdentity.generate(), provider.net.peer_id, FAKE_MODEL)
            answer = await first_answer(net, provider.net.peer_id, raw)  # host.new_stream
            assert isinstance(answer.msg, JobAccept)
            [stream] = [s for s in opened if s.wrote(JOB_PROTOCOL_ID)]
            assert waits_for_peer(stream.ops) == 3
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("refusal", ["na", "reset", "na then reset"])
async def test_a_provider_that_does_not_speak_the_job_protocol_is_failed_over(
    tmp_path: Path, refusal: str
) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            real = await start_provider(stack, nursery, FakeBackend(), tmp_path,
                                        config=JobServerConfig(price_per_1k=900))
            # Advertises the model cheaper, but never installed the job protocol's handler
            # (a misconfigured node, or one that speaks another protocol version).
            mute_id = NodeIdentity.generate()
            mute_server = JobServer(mute_id, FakeBackend(), real.server.models,
                                    config=JobServerConfig(price_per_1k=100))
            mute = await stack.enter_async_context(
                run_host(NetConfig(mute_id, bootstrap=(real.net.addrs()[0],))))
            mute.start_advertising(advert_for(mute_server), interval_s=1.0)
            if refusal != "na":  # py-libp2p's own answer; other implementations may reset
                refuse_protocol(mute, JOB_PROTOCOL_ID, answer_na=refusal == "na then reset")
            net, client, _ = await start_consumer(stack, tmp_path, (real.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 2)
            ranked = await client.candidates(FAKE_MODEL)
            assert ranked[0].peer_id == mute.peer_id

            outcome = await client.run(FAKE_MODEL, "go", JobParams(max_tokens=3))
            assert outcome.text == "t0 t1 t2 "
            assert outcome.provider == real.net.peer_id
            [failed] = outcome.failovers
            assert failed.provider == mute.peer_id
            assert f"does not support {JOB_PROTOCOL_ID}" in failed.reason
            nursery.cancel_scope.cancel()


async def test_an_unsupported_protocol_is_a_clear_error_and_the_connection_stays_usable() -> None:
    with trio.fail_after(30):
        async with run_host(config()) as server, run_host(config()) as client:
            server.set_stream_handler(ECHO, echo)
            await client.connect(server.addrs()[0])
            nobody = "/p2pinfer-test/nobody/1.0.0"
            with pytest.raises(ProtocolNotSupportedError, match=f"does not support {nobody}"):
                await client.open_stream(server.peer_id, nobody, first=b"\x03abc")
            stream = await client.open_stream(server.peer_id, ECHO, first=b"\x03abc")
            assert await stream.read_frame(timeout_s=10) == b"abc"
            await stream.close()


async def test_a_pipelined_open_dials_a_peer_it_has_no_connection_to() -> None:
    with trio.fail_after(30):
        async with run_host(config()) as server, run_host(config()) as client:
            server.set_stream_handler(ECHO, echo)
            client.add_peer_addrs(server.peer_id, tuple(server.addrs()))
            assert client.peers() == []
            stream = await client.open_stream(server.peer_id, ECHO, first=b"\x02hi")
            assert stream.protocol == ECHO and stream.remote_peer_id == server.peer_id
            assert await stream.read_frame(timeout_s=10) == b"hi"
            await stream.write_frame(b"again")
            assert await stream.read_frame(timeout_s=10) == b"again"
            await stream.close()
            assert client.peers() == [server.peer_id]


@pytest.mark.parametrize("answer_na", [False, True])
async def test_a_responder_that_resets_instead_of_accepting_does_not_support_the_protocol(
    answer_na: bool,
) -> None:
    with trio.fail_after(30):
        async with run_host(config()) as server, run_host(config()) as client:
            server.set_stream_handler(ECHO, echo)
            refuse_protocol(server, ECHO, answer_na=answer_na)
            await client.connect(server.addrs()[0])
            with pytest.raises(ProtocolNotSupportedError, match=f"does not support {ECHO}"):
                await client.open_stream(server.peer_id, ECHO, first=b"\x03abc")
            assert client.peers() == [server.peer_id]  # reached: only the protocol refused


async def test_a_connection_lost_during_negotiation_is_not_a_refused_protocol() -> None:
    with trio.fail_after(30):
        async with run_host(config()) as server, run_host(config()) as client:
            server.set_stream_handler(ECHO, echo)
            refuse_protocol(server, ECHO, hang_up=True)
            await client.connect(server.addrs()[0])
            with pytest.raises(PeerUnreachableError) as caught:
                await client.open_stream(server.peer_id, ECHO, first=b"\x03abc")
            assert not isinstance(caught.value, ProtocolNotSupportedError)


class NoiseRecorder:
    """Every encrypted message (one `write` of the secure connection under Yamux) one side
    of a real connection sends, as the Yamux frames in it: (type, flags, stream id, data)."""

    def __init__(self, net: NetHost, peer_id: str) -> None:
        [conn] = net._host.get_network().connections[parse_peer_id(peer_id)]
        secured = conn.muxed_conn.secured_conn  # type: ignore[attr-defined]
        self.messages: list[list[Frame]] = []
        original = secured.write

        async def write(data: bytes) -> None:
            self.messages.append(yamux_frames(bytes(data)))
            await original(data)

        secured.write = write

    def of_stream(self, stream_id: int) -> list[list[Frame]]:
        """The messages that carry a frame of `stream_id`, each cut to those frames."""
        out = [[f for f in m if f[2] == stream_id] for m in self.messages]
        return [m for m in out if m]


def streams_of(sent: NoiseRecorder, protocol: str) -> list[int]:
    """The ids of the streams of `protocol` the recorded side opened, in order."""
    ids = [f[2] for m in sent.messages for f in m if f[0] == 0 and proposal(protocol) in f[3]]
    return list(dict.fromkeys(ids))


async def echo_exchange(*, echo_with_answer: bool) -> tuple[list[Frame], list[list[Frame]]]:
    """One pipelined ECHO exchange between two real hosts already connected (the server
    registered `echo_with_answer` or not): the client's first message on the stream
    and every message of the server's on it, each cut to the stream's frames."""
    with trio.fail_after(30):
        async with run_host(config()) as server, run_host(config()) as client:
            server.set_stream_handler(ECHO, echo, echo_with_answer=echo_with_answer)
            await client.connect(server.addrs()[0])
            sent, answered = NoiseRecorder(client, server.peer_id), NoiseRecorder(
                server, client.peer_id)
            stream = await client.open_stream(server.peer_id, ECHO, first=b"\x03abc")
            assert await stream.read_frame(timeout_s=10) == b"abc"
            await stream.close()
    [stream_id] = streams_of(sent, ECHO)
    return sent.of_stream(stream_id)[0], answered.of_stream(stream_id)


async def test_a_pipelined_stream_costs_one_encrypted_message_each_way_before_the_answer() -> None:
    """The SYN rides with the proposal and request; the ACK and both multistream answers
    ride together (compat.yamux_open, compat.multistream_listener): stock py-libp2p sent
    four messages here, not two."""
    window_update, data, syn, ack = 1, 0, 0x1, 0x2
    opening, [answer, echoed, *_] = await echo_exchange(echo_with_answer=False)
    stream_id = opening[0][2]
    assert opening == [(data, syn, stream_id, proposal(ECHO) + b"\x03abc")]
    assert answer == [(window_update, ack, stream_id, b""),
                      (data, 0, stream_id, proposal(ECHO))]  # header and echo
    assert echoed == [(data, 0, stream_id, b"\x03abc")]


async def test_an_answering_protocol_sends_its_echo_with_the_handlers_answer() -> None:
    """`echo_with_answer` (the job protocol's registration): the ACK, both multistream
    answers and the handler's first write leave in one encrypted message."""
    window_update, data, ack = 1, 0, 0x2
    opening, [answer, *_] = await echo_exchange(echo_with_answer=True)
    stream_id = opening[0][2]
    assert answer == [(window_update, ack, stream_id, b""),
                      (data, 0, stream_id, proposal(ECHO) + b"\x03abc")]


async def test_a_provider_sends_the_job_echo_with_its_accept_and_alone_before_a_queue_wait(
    tmp_path: Path,
) -> None:
    """The job protocol's echo rides with the Accept (one message fewer per job); a job
    that must wait for a slot gets its echo before it waits, so the consumer's open does
    not wait on the queue (test_jobs.py's queued job, seen on the wire)."""
    stuck, data = FakeBackend(pause_after=1), 0
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, stuck, tmp_path,
                                            config=JobServerConfig(max_concurrency=1, queue=1))
            net, client, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            sent = NoiseRecorder(net, provider.net.peer_id)
            answered = NoiseRecorder(provider.net, net.peer_id)

            async def on_the_wire() -> None:
                with trio.fail_after(5):
                    while not answered.of_stream(streams_of(sent, JOB_PROTOCOL_ID)[-1]):
                        await trio.sleep(0.01)
                warm_up, _, queued = streams_of(sent, JOB_PROTOCOL_ID)
                [head, *_] = answered.of_stream(warm_up)
                [accept] = FrameDecoder().feed(b"".join(
                    f[3] for f in head if f[0] == data)[len(proposal(JOB_PROTOCOL_ID)):])
                assert decode_as(accept, JobAccept).msg.job_id  # the echo and the Accept
                [echo_alone] = answered.of_stream(queued)  # before the wait: no Accept yet
                assert b"".join(f[3] for f in echo_alone if f[0] == data) == proposal(
                    JOB_PROTOCOL_ID)

            await queued_behind_a_running_job(nursery, provider, client, stuck, on_the_wire)
            nursery.cancel_scope.cancel()


async def test_the_listener_always_finds_the_pipelined_request_when_it_negotiates() -> None:
    """The SYN rides on the first data frame (compat.yamux_open): py-libp2p's read loop
    creates the stream with the request already buffered, so the listener never answers
    a pipelined dialer as a lock-step one for want of bytes that were one frame behind
    (with the SYN a frame of its own, under load about 1 run in 50 did). Seen from the
    handler: each stream comes with its echo still unsent, to ride with the answer."""
    deferred: list[bool] = []

    async def echo_noting(stream: NetStream) -> None:
        deferred.append(stream.unsent)
        await echo(stream)

    with trio.fail_after(60):
        async with run_host(config()) as server, run_host(config()) as client:
            server.set_stream_handler(ECHO, echo_noting, echo_with_answer=True)
            await client.connect(server.addrs()[0])
            for _ in range(30):
                stream = await client.open_stream(server.peer_id, ECHO, first=b"\x03abc")
                assert await stream.read_frame(timeout_s=10) == b"abc"
                await stream.close()
    assert deferred == [True] * 30
