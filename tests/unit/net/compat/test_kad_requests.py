"""Attack 56: Kademlia requests pipelined on one stream. py-libp2p 0.8.1 answers every
request a DHT stream carries, one after another, however many: a FIND_NODE of 37 bytes
is answered with up to 20 peers, their addresses and signed peer records (~4.9 KB here),
~1.5 ms of the node's event loop each. Real p2pinfer hosts on loopback; the attacker
writes 2,000 FIND_NODE requests at once on one stream, as any peer with a fresh key can."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack

import pytest
import trio
import varint
from libp2p.kad_dht.pb.kademlia_pb2 import Message

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.compat import kad_requests
from p2pinfer.net.compat.kad_protocol import DHT_PROTOCOL_ID
from p2pinfer.net.compat.kad_requests import KAD_BURST, KAD_RATE_PER_S, KadRequestRate
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.streams import NetStream
from tests.integration.net_helpers import config
from tests.support.readers import BytesReader
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

pytestmark = pytest.mark.network


def find_node() -> bytes:
    message = Message()
    message.type = Message.MessageType.FIND_NODE
    message.key = NodeIdentity.generate().public_key
    raw = message.SerializeToString()
    return varint.encode(len(raw)) + raw


async def count_answers(stream: NetStream, wanted: int) -> int:
    """Answers read off `stream` until it ends or `wanted` came."""
    buffered, answers = b"", 0
    while answers < wanted:
        more = await stream.read_some(timeout_s=10)
        if not more:
            break
        buffered += more
        while buffered:
            try:
                length = varint.decode_bytes(buffered)
            except (TypeError, IndexError):
                break  # the prefix is not all here yet
            head = len(varint.encode(length))
            if len(buffered) < head + length:
                break
            buffered, answers = buffered[head + length:], answers + 1
    return answers


async def test_requests_pipelined_on_one_stream_are_answered_at_the_peer_s_rate() -> None:
    requests = 2_000
    with trio.fail_after(90):
        async with run_host(config(ip="127.0.0.2")) as target, \
                run_host(config()) as attacker, \
                run_host(config(ip="127.0.0.4")) as honest, AsyncExitStack() as stack:
            for _ in range(4):  # peers for the answers to name
                other: NetHost = await stack.enter_async_context(run_host(config(ip="127.0.0.3")))
                await other.connect(target.addrs()[0])
            await attacker.connect(target.addrs()[0])
            await honest.connect(target.addrs()[0])
            stream = await attacker.open_stream(target.peer_id, DHT_PROTOCOL_ID)
            started = time.monotonic()
            answers = 0

            async def read() -> None:
                nonlocal answers
                answers = await count_answers(stream, requests)

            with trio.move_on_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    await stream.write(find_node() * requests)
            elapsed = time.monotonic() - started
            # Another peer's requests are its own share: answered.
            own = await honest.open_stream(target.peer_id, DHT_PROTOCOL_ID)
            await own.write(find_node() * 3)
            assert await count_answers(own, 3) == 3
    # All 2,000 (9.8 MB) on the old code.
    assert answers <= KAD_BURST + KAD_RATE_PER_S * elapsed + 1, (answers, elapsed)


async def test_each_request_takes_one_of_its_peer_s_rate_whatever_its_size() -> None:
    from libp2p.kad_dht.kad_dht import read_varint_prefixed_bytes_limited

    now = [0.0]
    rate = KadRequestRate(clock=lambda: now[0])
    big = Message(type=Message.MessageType.FIND_NODE, key=b"k" * 300).SerializeToString()
    data = (find_node() + varint.encode(len(big)) + big) * (KAD_BURST // 2)
    stream = rate.ration(BytesReader(data), "peer")
    for _ in range(KAD_BURST):  # both sizes, as many as the burst holds
        await read_varint_prefixed_bytes_limited(stream, 1 << 20)
    assert stream._stream.unread == b""  # type: ignore[attr-defined]
    ration = rate.ration(BytesReader(find_node()), "peer")
    with pytest.raises(kad_requests.OverRate):
        await read_varint_prefixed_bytes_limited(ration, 1 << 20)
    assert rate.refused == 1
    await read_varint_prefixed_bytes_limited(rate.ration(BytesReader(find_node()), "other"), 99)
    now[0] += 1 / KAD_RATE_PER_S
    await read_varint_prefixed_bytes_limited(ration, 1 << 20)


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(kad_requests)
