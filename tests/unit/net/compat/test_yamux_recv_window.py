"""Attack: data past a stream's receive window, buffered anyway.

py-libp2p 0.8.1 appends every DATA payload to the stream's buffer whatever the window
it granted (256 KiB): 18 MB sent on a stream nothing reads yet were all held. Real
p2pinfer hosts on 127.0.0.1; the attacker writes raw Yamux frames on its connection.
"""

from __future__ import annotations

import struct

import pytest
import trio
from libp2p.peer.id import ID

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.compat import yamux_recv_window
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.streams import NetStream
from tests.support.waiting import await_until
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

pytestmark = pytest.mark.network

STREAM = 300_001
CHUNK = b"\0" * 60_000


def conn_to(net: NetHost, other: NetHost) -> object:
    conns = net._host.get_network().connections.get(ID.from_base58(other.peer_id))
    return conns[0] if isinstance(conns, list) else conns


async def flood(attacker: NetHost, target: NetHost, chunks: int) -> None:
    """A bare SYN, then `chunks` DATA frames of 60,000 bytes on that stream."""
    secured = conn_to(attacker, target).muxed_conn.secured_conn  # type: ignore[attr-defined]
    await secured.write(struct.pack("!BBHII", 0, 1, 1, STREAM, 0))
    for _ in range(chunks):
        try:
            with trio.fail_after(2):
                await secured.write(struct.pack("!BBHII", 0, 0, 0, STREAM, len(CHUNK)) + CHUNK)
        except Exception:  # the target closed the connection: nothing more goes
            return


async def test_defect_data_past_the_window_is_buffered() -> None:
    with trio.fail_after(60):
        async with run_host(NetConfig(NodeIdentity.generate())) as target, \
                run_host(NetConfig(NodeIdentity.generate())) as attacker:
            await attacker.connect(next(a for a in target.addrs() if "/tcp/" in a))
            muxed = conn_to(target, attacker).muxed_conn  # type: ignore[attr-defined]
            muxed.stream_buffers = dict(muxed.stream_buffers)  # libp2p's own plain dict
            await flood(attacker, target, 20)  # 1.2 MB against a 256 KiB window
            await await_until(lambda: len(muxed.stream_buffers.get(STREAM, b"")) > 1_000_000)


async def test_a_peer_that_sends_past_the_window_is_disconnected() -> None:
    with trio.fail_after(60):
        async with run_host(NetConfig(NodeIdentity.generate())) as target, \
                run_host(NetConfig(NodeIdentity.generate())) as attacker:
            await attacker.connect(next(a for a in target.addrs() if "/tcp/" in a))
            muxed = conn_to(target, attacker).muxed_conn  # type: ignore[attr-defined]
            await flood(attacker, target, 20)
            await await_until(lambda: attacker.peer_id not in target.peers())
            assert len(muxed.stream_buffers.get(STREAM, b"")) <= 256 * 1024


async def test_an_honest_megabyte_within_the_window_arrives_whole() -> None:
    """What a well-behaved sender does: it waits for window updates, so 2 MiB through a
    256 KiB window arrive intact and the connection stays."""
    payload = bytes(range(256)) * 8192  # 2 MiB
    received = bytearray()

    async def sink(stream: NetStream) -> None:
        while len(received) < len(payload):
            received.extend(await stream.read_some(65536))
        await stream.close()

    with trio.fail_after(60):
        async with run_host(NetConfig(NodeIdentity.generate())) as target, \
                run_host(NetConfig(NodeIdentity.generate())) as sender:
            target.set_stream_handler("/test/sink/1", sink)
            addr = next(a for a in target.addrs() if "/tcp/" in a)
            await sender.connect(addr)
            stream = await sender.open_stream(target.peer_id, "/test/sink/1")
            await stream.write(payload, timeout_s=30)
            await await_until(lambda: len(received) == len(payload), timeout_s=30)
            assert bytes(received) == payload
            assert sender.peer_id in target.peers()
            await stream.close()


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(yamux_recv_window)
