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


SPLICE_FROM = "/p2pinfer-test/splice-from/1.0.0"
SPLICE_TO = "/p2pinfer-test/splice-to/1.0.0"
SENT = bytes(range(256)) * 800  # 200 KiB, more than one yamux window can hold


async def test_a_spliced_off_stream_stays_on_its_connection_until_its_end_is_read() -> None:
    # What a job move relies on: the old stream's last bytes are still on their way when
    # both sides have closed their write sides; py-libp2p's close() would unregister it
    # from its connection at once (and a relay leg with no stream left gets closed).
    async def source(stream: NetStream) -> None:
        await stream.write(SENT)  # then the handler's return half-closes it
        await stream.read_some(timeout_s=10)  # until the asker's side ends

    async def sink(stream: NetStream) -> None:
        await stream.write(b"new")
        await stream.read_some(timeout_s=10)

    with trio.fail_after(30):
        async with run_host(config()) as server, run_host(config()) as client:
            server.set_stream_handler(SPLICE_FROM, source)
            server.set_stream_handler(SPLICE_TO, sink)
            await client.connect(server.addrs()[0])
            stream = await client.open_stream(server.peer_id, SPLICE_FROM)
            got = await stream.read_some(1024, timeout_s=10)
            old = stream._raw
            await stream.splice(await client.open_stream(server.peer_id, SPLICE_TO))
            assert old in old.swarm_conn.get_streams()  # type: ignore[attr-defined]
            while len(got) < len(SENT):
                data = await stream.read_some(timeout_s=10)
                assert data, "the old stream ended before its last byte"
                got += data
            assert got == SENT
            assert await stream.read_some(timeout_s=5) == b"new"  # past its end, the new one
            assert old not in old.swarm_conn.get_streams()  # type: ignore[attr-defined]
            await stream.close()
