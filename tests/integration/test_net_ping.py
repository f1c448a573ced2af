"""libp2p ping on real hosts: every node answers `/ipfs/ping/1.0.0`, the client times
round trips below a millisecond, and one peer cannot park more than two ping streams."""

from __future__ import annotations

import contextlib
import os

import pytest
import trio

from p2pinfer.errors import NetworkError, StreamClosedError
from p2pinfer.net.host import run_host
from p2pinfer.net.ping import PING_BYTES, PING_PROTOCOL_ID, ping
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
