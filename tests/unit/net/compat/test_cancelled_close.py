"""Connections: in stock py-libp2p 0.8.1 a `SwarmConn.close` cancelled at its first await
marks the connection closed and leaves its TCP socket open (and the connection in the
swarm's table), and every later close skips it; the wrapped close (`install`) closes the
socket and drops the connection at once, and `close_host` closes any socket left. Real
py-libp2p hosts on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.network.connection.swarm_connection import SwarmConn
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from p2pinfer.net.compat import cancelled_close
from p2pinfer.net.compat.cancelled_close import close_sockets, open_connections, tcp_socket
from p2pinfer.net.config import parse_peer_id
from p2pinfer.net.host import run_host
from tests.integration.net_helpers import config
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

pytestmark = pytest.mark.network

LOCAL = Multiaddr("/ip4/127.0.0.1/tcp/0")


@pytest.fixture
def dialled(monkeypatch: pytest.MonkeyPatch) -> list[trio.SocketStream]:
    """Every TCP stream trio opens during the test (what the hosts dial), in order."""
    streams: list[trio.SocketStream] = []
    open_tcp_stream = trio.open_tcp_stream

    async def recording(*args: Any, **kwargs: Any) -> trio.SocketStream:
        stream = await open_tcp_stream(*args, **kwargs)
        streams.append(stream)
        return stream

    monkeypatch.setattr(trio, "open_tcp_stream", recording)
    return streams


@asynccontextmanager
async def connected_pair() -> AsyncIterator[tuple[IHost, IHost, Any, Any]]:
    """Two stock libp2p hosts, the client connected: (server, client, the client's one
    connection, its TCP socket, open)."""
    server, client = new_host(listen_addrs=[LOCAL]), new_host(listen_addrs=[LOCAL])
    async with server.run(listen_addrs=[LOCAL]), client.run(listen_addrs=[LOCAL]):
        await client.connect(info_from_p2p_addr(Multiaddr(f"{server.get_addrs()[0]}")))
        [conn] = open_connections(client)
        sock = tcp_socket(conn)
        assert sock is not None and sock.fileno() != -1
        yield server, client, conn, sock


@asynccontextmanager
async def write_lock_held(conn: Any) -> AsyncIterator[None]:
    """For the block, another task holds the Yamux write lock of `conn`, as a write of
    ours stuck on the full socket of a peer that stopped reading does: a close of `conn`
    (whose GO_AWAY needs the lock) hangs until the bound on it cuts it short."""
    held, release = trio.Event(), trio.Event()

    async def hold_the_lock() -> None:
        async with conn.muxed_conn._write_lock:
            held.set()
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold_the_lock)
        await held.wait()
        try:
            yield
        finally:
            release.set()


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(cancelled_close)


async def test_defect_stock_a_cancelled_close_leaves_the_socket_open_for_good(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # If this fails, upstream closes a connection whatever cancels its close: drop
    # `install` and `close_sockets` from `close_host`.
    monkeypatch.setattr(SwarmConn, "close", cancelled_close.ORIGINAL)  # libp2p's own
    with trio.fail_after(20):
        async with connected_pair() as (server, client, conn, sock):
            with trio.CancelScope() as cancelled:
                cancelled.cancel()
                await conn.close()  # cut short at its first await
            assert conn.is_closed and sock.fileno() != -1
            assert server.get_id() in client.get_connected_peers()  # still listed
            with trio.CancelScope(shield=True):
                await conn.close()  # a later close, not cancelled: returns at once
            await client.close()  # nor does the host's own close reach it
            assert sock.fileno() != -1
            assert close_sockets([conn]) == 1 and sock.fileno() == -1
            await server.close()


async def test_a_host_torn_down_in_a_cancelled_scope_leaves_no_socket_open(
        dialled: list[trio.SocketStream]) -> None:
    with trio.fail_after(20):
        async with run_host(config()) as server, trio.open_nursery() as nursery, \
                AsyncExitStack() as stack:
            client = await stack.enter_async_context(run_host(config()))
            await client.connect(server.addrs()[0])
            nursery.cancel_scope.cancel()  # the client's teardown runs cancelled
    assert len(dialled) == 1
    assert dialled[0].socket.fileno() == -1


async def test_a_cancelled_close_closes_the_socket_and_unlists_the_connection() -> None:
    cancelled_close.install()
    with trio.fail_after(20):
        async with connected_pair() as (server, client, conn, sock):
            with trio.CancelScope() as cancelled:
                cancelled.cancel()
                await conn.close()  # cut short at its first await, as above
            assert sock.fileno() == -1
            assert server.get_id() not in client.get_connected_peers()
            with trio.move_on_after(10):  # the server sees the socket close: its side goes
                while client.get_id() in server.get_connected_peers():
                    await trio.sleep(0.05)
            assert client.get_id() not in server.get_connected_peers()
            await client.close()
            await server.close()


async def test_a_duplicate_sharing_the_session_leaves_the_socket_to_the_other() -> None:
    cancelled_close.install()
    with trio.fail_after(20):
        async with connected_pair() as (server, client, conn, sock):
            conn._shared_muxed_conn = True  # as libp2p marks a dial-race duplicate
            cancelled_close.abandon(conn)
            assert sock.fileno() != -1  # the session's other wrapper still uses it
            assert server.get_id() not in client.get_connected_peers()
            close_sockets([conn])
            await client.close()
            await server.close()


async def test_a_drop_whose_close_hangs_leaks_no_socket(
        dialled: list[trio.SocketStream]) -> None:
    """The attack: a peer makes our close of its connection hang. A peer that stops
    reading leaves a write of ours stuck on the full socket holding Yamux's write lock,
    which the close's GO_AWAY needs; here a task holds that lock. The node's bound on
    the drop (2 s) cuts the close short: the socket must close all the same and the
    peer must no longer count as connected."""
    with trio.fail_after(30):
        async with run_host(config()) as server, run_host(config()) as client:
            await client.connect(server.addrs()[0])
            [conn] = open_connections(client._host)
            async with write_lock_held(conn):
                started = trio.current_time()
                await client._drop_connection(parse_peer_id(server.peer_id))
                assert trio.current_time() - started >= 1.5  # the bound cut the close short
                assert dialled[0].socket.fileno() == -1
                assert server.peer_id not in client.peers()


def stream_reservations(net: Any) -> tuple[int, int]:
    """The host's streams as its resource manager counts them, and the free places of the
    swarm's stream semaphore (each stream holds one of both until it is closed)."""
    swarm = net._host.get_network()
    return swarm._resource_manager._current_streams, swarm._stream_semaphore.value


async def test_a_drop_whose_close_hangs_gives_back_its_streams_reservations() -> None:
    """The attack: each connection whose close a peer makes hang (as above) kept its
    streams' places in the resource manager (10,000 in all, for every peer) and the
    stream semaphore: the streams are released by the close's cleanup, which the bound
    cut short, and pubsub's outbound stream by nobody else. Enough of them and the node
    refuses every new stream (a job's too) or waits for a place forever."""
    with trio.fail_after(30):
        async with run_host(config()) as server, run_host(config()) as client:
            before = stream_reservations(client)
            await client.connect(server.addrs()[0])
            [conn] = open_connections(client._host)
            with trio.move_on_after(5):  # pubsub's and identify's streams open
                while len(conn.streams) < 2:
                    await trio.sleep(0.05)
            assert stream_reservations(client) != before
            async with write_lock_held(conn):
                await client._drop_connection(parse_peer_id(server.peer_id))
            with trio.move_on_after(5):
                while stream_reservations(client) != before:
                    await trio.sleep(0.05)
            assert stream_reservations(client) == before


async def test_a_drop_whose_close_hangs_is_announced_to_the_notifees() -> None:
    """The same attack, for libp2p's per-peer bookkeeping: the cut-short close never told
    the notifees, so the connection's tag-store entry, the identify record and pubsub's
    peer stayed for each peer that made its close hang (one more per fresh key)."""
    with trio.fail_after(30):
        async with run_host(config()) as server, run_host(config()) as client:
            await client.connect(server.addrs()[0])
            host, peer = client._host, parse_peer_id(server.peer_id)
            tags, pubsub = host.get_network().tag_store, client._pubsub
            with trio.move_on_after(5):
                while peer not in pubsub.peers or peer not in host._identified_peers:
                    await trio.sleep(0.05)
            assert peer in pubsub.peers and peer in host._identified_peers
            assert tags.get_tag_info(peer) is not None
            [conn] = open_connections(host)
            async with write_lock_held(conn):
                await client._drop_connection(peer)

            def forgotten() -> bool:
                info = tags.get_tag_info(peer)
                if any(c is not conn for c in open_connections(host)):
                    # On a loaded machine the routing table's refresh may dial the peer
                    # again within the wait: a new connection has entries of its own, and
                    # what must be gone is the dropped one's.
                    return info is None or id(conn) not in info.conns
                return (peer not in pubsub.peers and peer not in host._identified_peers
                        and info is None)

            with trio.move_on_after(5):
                while not forgotten():
                    await trio.sleep(0.05)
            assert forgotten()
