"""What an idle node pays per message, on real hosts: the py-libp2p defaults we change.

See p2pinfer/net/compat/ (yamux_window, sender_records, task_tree) and run_host's GossipSub
settings; the numbers are in docs/scaling.md.
"""

from __future__ import annotations

import hashlib
import struct
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from libp2p.peer.envelope import Envelope
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.pubsub.pb import rpc_pb2
from libp2p.stream_muxer.yamux.yamux import HEADER_SIZE, TYPE_WINDOW_UPDATE, YAMUX_HEADER_FORMAT
from libp2p.tools.anyio_service.trio_tasks import FunctionTask

from p2pinfer.errors import StreamClosedError
from p2pinfer.identity import NodeIdentity
from p2pinfer.net.compat.sender_records import consume_sender_record_once
from p2pinfer.net.config import parse_peer_id
from p2pinfer.net.host import run_host
from p2pinfer.net.streams import NetStream
from tests.integration.net_helpers import config

pytestmark = pytest.mark.network

SINK = "/p2pinfer-test/sink/1.0.0"
TOPIC = "p2pinfer-test/upkeep/1"


def count_window_updates(raw: Any) -> list[int]:
    """Record the increments of the plain WINDOW_UPDATE frames sent for `raw`'s stream."""
    muxed = raw.muxed_stream
    conn = muxed.muxed_conn
    sent: list[int] = []
    write_frame: Callable[[bytes], Awaitable[None]] = conn._write_frame

    async def counting(data: bytes) -> None:
        if len(data) >= HEADER_SIZE:
            _, typ, flags, sid, length = struct.unpack(YAMUX_HEADER_FORMAT, data[:HEADER_SIZE])
            if typ == TYPE_WINDOW_UPDATE and flags == 0 and sid == muxed.stream_id:
                sent.append(length)
        await write_frame(data)

    conn._write_frame = counting
    return sent


async def sink_all(stream: NetStream, updates: list[list[int]]) -> None:
    """Read frames to the end, counting window updates; answer with the sha256 of it all."""
    updates.append(count_window_updates(stream._raw))
    digest = hashlib.sha256()
    while True:
        try:
            digest.update(await stream.read_frame(timeout_s=10))
        except StreamClosedError:
            break
    await stream.write_frame(digest.digest())


async def send_frames(frames: list[bytes]) -> list[int]:
    """Send `frames` to a sink on another host; the window updates the sink sent back."""
    updates: list[list[int]] = []
    async with run_host(config()) as server, run_host(config()) as client:
        server.set_stream_handler(SINK, lambda s: sink_all(s, updates))
        await client.connect(server.addrs()[0])
        stream = await client.open_stream(server.peer_id, SINK)
        for frame in frames:
            await stream.write_frame(frame)
        await stream.close()  # half-close: the sink reads to the end, then answers
        expected = hashlib.sha256(b"".join(frames)).digest()
        assert await stream.read_frame(timeout_s=10) == expected
    return updates[0]


async def test_small_frames_do_not_each_send_a_window_update() -> None:
    # py-libp2p's default credited every read: a frame's varint length is read a byte at
    # a time, so each small frame made the receiver send 2-3 update frames back.
    with trio.fail_after(30):
        updates = await send_frames([b"x" * 10] * 200)
    assert updates == []


async def test_a_transfer_larger_than_the_window_still_gets_credit() -> None:
    frames = [bytes([i]) * 64 * 1024 for i in range(48)]  # 3 MiB, the window is 256 KiB
    with trio.fail_after(60):
        updates = await send_frames(frames)
    assert sum(updates) >= 3 * 1024 * 1024 - 256 * 1024
    assert len(updates) < len(frames)  # at most one update per half window read


async def test_a_peers_sender_record_is_verified_once(monkeypatch: pytest.MonkeyPatch) -> None:
    verified: list[bytes] = []
    validate = Envelope.validate

    def counting_validate(self: Envelope, domain: str) -> None:
        # Only pubsub's checks count (identify and the DHT verify records on their own).
        callers = {f.f_code.co_name for f, _ in traceback.walk_stack(None)}
        if callers & {"continuously_read_stream", "handle_rpc"}:
            verified.append(self.raw_payload)
        validate(self, domain)

    monkeypatch.setattr(Envelope, "validate", counting_validate)
    received: list[bytes] = []

    async def collect(message: Any) -> None:
        received.append(message.data)

    with trio.fail_after(60):
        async with run_host(config()) as sender, run_host(config()) as receiver:
            await receiver.subscribe(TOPIC, handler=collect)
            await sender.subscribe(TOPIC)
            await receiver.connect(sender.addrs()[0])
            await sender.wait_for_mesh(receiver.peer_id, TOPIC)
            for i in range(20):
                await sender.publish(TOPIC, b"message %d" % i)
            while len(received) < 20:
                await trio.sleep(0.05)
    assert len(received) == 20
    # Each of the 20 RPCs carried the sender's record; it was verified once.
    assert 0 < len(verified) == len(set(verified)) <= 2


async def test_a_bad_or_foreign_sender_record_is_still_refused() -> None:
    with trio.fail_after(30):
        async with run_host(config()) as alice, run_host(config()) as bob:
            raw, _ = env_to_send_in_RPC(alice._host)
            alice_id = parse_peer_id(alice.peer_id)
            stranger = parse_peer_id(NodeIdentity.generate().peer_id)
            assert consume_sender_record_once(rpc_pb2.RPC(senderRecord=raw), bob._host, alice_id)
            assert consume_sender_record_once(rpc_pb2.RPC(senderRecord=raw), bob._host, alice_id)
            # Alice's record relayed by someone else, a tampered copy, and garbage.
            assert not consume_sender_record_once(
                rpc_pb2.RPC(senderRecord=raw), bob._host, stranger
            )
            tampered = raw[:-1] + bytes([raw[-1] ^ 1])
            assert not consume_sender_record_once(
                rpc_pb2.RPC(senderRecord=tampered), bob._host, alice_id
            )
            assert not consume_sender_record_once(
                rpc_pb2.RPC(senderRecord=b"garbage"), bob._host, alice_id
            )
            assert consume_sender_record_once(rpc_pb2.RPC(), bob._host, alice_id)  # none sent


async def test_gossip_heartbeat_stays_as_configured() -> None:
    # py-libp2p's adaptive gossip rated a lone or small network's health at ~0.5 every
    # 30 s and set the heartbeat to 60 s; it must stay at the configured interval.
    with trio.fail_after(30):
        async with run_host(config(gossip_heartbeat_s=1)) as host:
            router = host._pubsub.router
            router.last_health_update = 0  # due now, instead of 30 s after start
            await trio.sleep(2.5)
            assert router.heartbeat_interval == 1
            assert (router.degree_low, router.degree_high) == (4, 12)


async def test_a_received_message_does_not_walk_the_pubsub_task_tree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # py-libp2p's service manager looked for the parent of each message's task by walking
    # all its tasks (one per peer and more): O(peers) per message received.
    walks: list[int] = []
    iterate = FunctionTask.iterate_tasks.__func__  # type: ignore[attr-defined]

    def counting_iterate(cls: type[FunctionTask], *tasks: Any) -> Any:
        if not any(f.f_code.co_name == "iterate_tasks" for f, _ in traceback.walk_stack(None)):
            walks.append(len(tasks))  # a walk's top call, not its recursion
        return iterate(cls, *tasks)

    monkeypatch.setattr(FunctionTask, "iterate_tasks", classmethod(counting_iterate))
    received: list[bytes] = []

    async def collect(message: Any) -> None:
        received.append(message.data)

    with trio.fail_after(60):
        async with run_host(config()) as sender, run_host(config()) as receiver:
            await receiver.subscribe(TOPIC, handler=collect)
            await sender.subscribe(TOPIC)
            await receiver.connect(sender.addrs()[0])
            await sender.wait_for_mesh(receiver.peer_id, TOPIC)
            walks.clear()
            for i in range(20):
                await sender.publish(TOPIC, b"message %d" % i)
            while len(received) < 20:
                await trio.sleep(0.05)
    assert len(walks) < 10  # once per reading task (a stream per peer), not once per message

