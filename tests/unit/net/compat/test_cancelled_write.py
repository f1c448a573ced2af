"""Noise: in stock py-libp2p 0.8.1 a stream write cancelled after its message was
encrypted (nonce spent) and before the socket took it leaves the peer unable to decrypt
anything after it, and the whole connection dies; with the workaround the message goes
out whole and every other stream on the connection goes on. Real py-libp2p hosts on
127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.security.noise.io import BaseNoiseMsgReadWriter

from p2pinfer.net.compat import cancelled_write
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p
from tests.unit.net.compat.test_cancelled_close import connected_pair

pytestmark = pytest.mark.network

ECHO = TProtocol("/p2pinfer-test/lines/1")


@pytest.fixture
def stock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BaseNoiseMsgReadWriter, "write_msg", cancelled_write.ORIGINAL)


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BaseNoiseMsgReadWriter, "write_msg", cancelled_write.write_whole)


@asynccontextmanager
async def pair_with_receiver() -> AsyncIterator[
        tuple[IHost, Any, trio.MemoryReceiveChannel[bytes]]]:
    """`connected_pair`, the server's handler sending on what each stream reads: (the
    client, its one connection, what the server received, chunk by chunk)."""
    send, received = trio.open_memory_channel[bytes](100)

    async def handler(stream: INetStream) -> None:
        while data := await stream.read(65536):
            await send.send(data)

    async with connected_pair() as (server, client, conn, _sock):
        server.set_stream_handler(ECHO, handler)
        yield client, conn, received


def cancel_after_encrypting(conn: Any, scope: trio.CancelScope) -> Callable[[], int]:
    """Make the connection's next Noise message cancel `scope` once it is encrypted,
    before the socket has it: a cancel arriving at that checkpoint. How many were cut."""
    packets = conn.muxed_conn.secured_conn.conn.read_writer
    original: Callable[[bytes], Awaitable[None]] = packets.write_msg
    cut = 0

    async def write_msg(data: bytes) -> None:
        nonlocal cut
        if not scope.cancel_called:
            cut += 1
            scope.cancel()
        await original(data)

    packets.write_msg = write_msg
    return lambda: cut


async def cut_write_then_send_on_another_stream(client: IHost, conn: Any,
                                                received: Any) -> list[bytes]:
    """Write on one stream with the write cut after encryption, then a line on a second
    stream: what the server received (empty if the connection died)."""
    server_id = next(iter(client.get_connected_peers()))
    first = await client.new_stream(server_id, [ECHO])
    second = await client.new_stream(server_id, [ECHO])
    with trio.CancelScope() as writer:
        cuts = cancel_after_encrypting(conn, writer)
        await first.write(b"token 1\n")
        await trio.sleep(1)  # with the workaround, the cancel is raised at a checkpoint
    assert cuts() == 1
    got = []
    try:
        await second.write(b"after\n")
    except Exception:  # the stock connection may already be gone here
        return got
    with trio.move_on_after(3):
        while True:
            got.append(await received.receive())
            if b"after\n" in got:
                break
    return got


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(cancelled_write)


@pytest.mark.usefixtures("stock")
async def test_defect_stock_a_write_cancelled_after_encrypting_kills_the_connection() -> None:
    # If this fails, upstream no longer spends a nonce on a message a cancel keeps off
    # the wire: drop `cancelled_write`.
    with trio.fail_after(20):
        async with pair_with_receiver() as (client, conn, received):
            got = await cut_write_then_send_on_another_stream(client, conn, received)
            assert b"after\n" not in got
            with trio.move_on_after(3):
                while client.get_connected_peers():
                    await trio.sleep(0.05)
            assert client.get_connected_peers() == []  # the server hung up


@pytest.mark.usefixtures("patched")
async def test_a_cancelled_write_goes_out_whole_and_the_connection_lives_on() -> None:
    with trio.fail_after(20):
        async with pair_with_receiver() as (client, conn, received):
            got = await cut_write_then_send_on_another_stream(client, conn, received)
            assert got == [b"token 1\n", b"after\n"]
            assert len(client.get_connected_peers()) == 1


@pytest.mark.usefixtures("patched")
async def test_a_pending_cancel_stops_a_write_before_anything_is_encrypted() -> None:
    with trio.fail_after(20):
        async with pair_with_receiver() as (client, conn, received):
            noise = conn.muxed_conn.secured_conn.conn
            nonce = noise.noise_state.noise_protocol.cipher_state_encrypt.n
            with trio.CancelScope() as scope:
                scope.cancel()
                await noise.write_msg(b"never")
            assert noise.noise_state.noise_protocol.cipher_state_encrypt.n == nonce
            server_id = next(iter(client.get_connected_peers()))
            stream = await client.new_stream(server_id, [ECHO])
            await stream.write(b"still fine\n")
            with trio.move_on_after(3):
                assert await received.receive() == b"still fine\n"


@pytest.mark.usefixtures("patched")
async def test_a_peer_that_stops_reading_gets_its_connection_closed_after_the_grace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A cancelled write may wait for the wire, but not forever: past the grace the
    # connection is closed and the write raises.
    monkeypatch.setattr(cancelled_write, "SEND_GRACE_S", 0.5)
    with trio.fail_after(20):
        async with pair_with_receiver() as (client, conn, _received):
            noise = conn.muxed_conn.secured_conn.conn
            stalled = trio.Event()

            async def never_sends(data: bytes) -> None:
                stalled.set()
                await trio.sleep_forever()

            noise.read_writer.write_msg = never_sends
            with pytest.raises(Exception, match="not sent within"):
                await noise.write_msg(b"stuck")
            assert stalled.is_set()
            with trio.move_on_after(3):
                while client.get_connected_peers():
                    await trio.sleep(0.05)
            assert client.get_connected_peers() == []  # closed, not left desynchronised
