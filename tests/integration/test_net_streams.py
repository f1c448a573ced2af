"""Framed streams between real hosts: echo, the frame limit, handler failures, shutdown."""

from __future__ import annotations

import pytest
import trio

from p2pinfer.errors import ProtocolNotSupportedError, StreamClosedError
from p2pinfer.net.host import run_host
from p2pinfer.net.streams import NetStream
from tests.integration.net_helpers import config

pytestmark = pytest.mark.network

ECHO = "/p2pinfer-test/echo/1.0.0"
LIMIT = 64 * 1024


async def echo(stream: NetStream) -> None:
    while True:
        try:
            frame = await stream.read_frame(max_size=LIMIT, timeout_s=5)
        except StreamClosedError:
            return  # the asker finished
        await stream.write_frame(frame)


async def test_frames_echo_in_order_up_to_the_limit() -> None:
    with trio.fail_after(30):
        async with run_host(config()) as server, run_host(config()) as client:
            server.set_stream_handler(ECHO, echo)
            await client.connect(server.addrs()[0])
            stream = await client.open_stream(server.peer_id, ECHO)
            assert stream.remote_peer_id == server.peer_id
            for payload in (b"", b"one", bytes(range(256)) * 256):
                await stream.write_frame(payload)
                assert await stream.read_frame(max_size=LIMIT) == payload
            await stream.close()


async def test_frame_over_the_limit_ends_the_stream() -> None:
    with trio.fail_after(30):
        async with run_host(config()) as server, run_host(config()) as client:
            server.set_stream_handler(ECHO, echo)
            await client.connect(server.addrs()[0])
            stream = await client.open_stream(server.peer_id, ECHO)
            await stream.write_frame(b"x" * (LIMIT + 1))
            with pytest.raises(StreamClosedError):
                await stream.read_frame(timeout_s=10)


async def test_unknown_protocol_is_refused() -> None:
    with trio.fail_after(30):
        async with run_host(config()) as server, run_host(config()) as client:
            await client.connect(server.addrs()[0])
            with pytest.raises(ProtocolNotSupportedError, match="does not support"):
                await client.open_stream(server.peer_id, "/p2pinfer-test/nobody/1.0.0")


async def test_shutdown_does_not_wait_for_a_handler_blocked_on_its_peer() -> None:
    entered = trio.Event()

    async def stuck(stream: NetStream) -> None:
        entered.set()
        await trio.sleep_forever()

    with trio.fail_after(30):
        async with run_host(config()) as client:
            async with run_host(config()) as server:
                server.set_stream_handler(ECHO, stuck)
                await client.connect(server.addrs()[0])
                stream = await client.open_stream(server.peer_id, ECHO)
                await stream.write_frame(b"hi")
                await entered.wait()
            # The server is gone: its side of the stream went with it.
            with pytest.raises(StreamClosedError):
                await stream.read_frame(timeout_s=10)
