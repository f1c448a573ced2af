"""libp2p ping on real hosts: every node answers `/ipfs/ping/1.0.0`, the client times
round trips below a millisecond, and one peer cannot park more than two ping streams."""

from __future__ import annotations

import contextlib
import os

import pytest
import trio

from p2pinfer.errors import NetworkError, StreamClosedError
from p2pinfer.net.host import run_host
from p2pinfer.net.ping import PING_BURST, PING_BYTES, PING_PROTOCOL_ID, PING_RATE_PER_S, ping
from p2pinfer.net.streams import NetStream
from tests.integration.net_helpers import config

pytestmark = pytest.mark.network


async def test_a_node_answers_pings_and_the_round_trips_are_timed_finer_than_a_ms() -> None:
    with trio.fail_after(30):
        async with run_host(config()) as node, run_host(config()) as pinger:
            await pinger.connect(node.addrs()[0])
            rtts = await ping(pinger, node.peer_id, 5)
            assert len(rtts) == 5
            assert all(0 < rtt < 5_000 for rtt in rtts)
            assert any(rtt != int(rtt) for rtt in rtts)  # not whole milliseconds
            assert len(await ping(node, pinger.peer_id, 1)) == 1  # both ways
            # py-libp2p kept an emptied entry per peer that ever pinged (keys are free)
            with trio.fail_after(5):
                while node.ping_service._inbound_streams:
                    await trio.sleep(0.01)


async def echo_once(stream: NetStream) -> bytes:
    payload = os.urandom(PING_BYTES)
    await stream.write(payload, timeout_s=5)
    echo = b""
    while len(echo) < PING_BYTES:
        more = await stream.read_some(timeout_s=5)
        if not more:
            break
        echo += more
    assert not echo or echo == payload
    return echo


async def test_a_third_ping_stream_from_one_peer_is_refused_and_the_first_two_still_work() -> None:
    with trio.fail_after(30):
        async with run_host(config()) as node, run_host(config()) as hog:
            await hog.connect(node.addrs()[0])
            first = await hog.open_stream(node.peer_id, PING_PROTOCOL_ID)
            second = await hog.open_stream(node.peer_id, PING_PROTOCOL_ID)
            assert await echo_once(first) and await echo_once(second)
            # The third is reset at once: while it opens (PeerUnreachableError), while
            # the ping is written, or before anything is echoed.
            with contextlib.suppress(NetworkError):
                third = await hog.open_stream(node.peer_id, PING_PROTOCOL_ID)
                assert await echo_once(third) == b""
            assert await echo_once(first) and await echo_once(second)
            for stream in (first, second):
                await stream.reset()


async def test_an_echo_of_other_bytes_is_an_error() -> None:
    with trio.fail_after(30):
        async with run_host(config()) as liar, run_host(config()) as pinger:

            async def wrong_echo(stream: NetStream) -> None:
                got = await stream.read_some(timeout_s=5)
                await stream.write(bytes(len(got)))

            liar.set_stream_handler(PING_PROTOCOL_ID, wrong_echo)
            await pinger.connect(liar.addrs()[0])
            with pytest.raises(StreamClosedError, match="other bytes"):
                await ping(pinger, liar.peer_id, 1)


async def test_pings_sent_in_bulk_are_echoed_at_a_rate_not_all_at_once() -> None:
    """Attack 55: a ping's echo costs the node a read and a write through Yamux and Noise
    (~40 us of its event loop) but costs a native pinger next to nothing, and nothing
    bounded how many a stream may ask: 64 KiB of pings written at once came back as
    2,048 echoes as fast as the node could write them, again and again. Now a peer's
    pings are echoed PING_BURST at once, then PING_RATE_PER_S a second."""
    pings = 2_048
    with trio.fail_after(60):
        async with run_host(config()) as node, run_host(config()) as hog, \
                run_host(config()) as honest:
            await hog.connect(node.addrs()[0])
            await honest.connect(node.addrs()[0])
            stream = await hog.open_stream(node.peer_id, PING_PROTOCOL_ID)
            payload = os.urandom(PING_BYTES * pings)
            echoed = 0
            started = trio.current_time()

            async def read_echoes() -> None:
                nonlocal echoed
                while echoed < len(payload):
                    more = await stream.read_some(timeout_s=20)
                    if not more:
                        return
                    echoed += len(more)

            with trio.move_on_after(2.0):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_echoes)
                    await stream.write(payload, timeout_s=20)
            elapsed = trio.current_time() - started
            await stream.reset()
            with trio.fail_after(2):  # another peer's pings: its own share, answered
                assert len(await ping(honest, node.peer_id, 3)) == 3
    # All 2,048 in ~0.3 s on the old code.
    assert echoed // PING_BYTES <= PING_BURST + PING_RATE_PER_S * elapsed + 1, \
        (echoed, elapsed)
