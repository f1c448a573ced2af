"""Connections: in stock py-libp2p 0.8.1 a `SwarmConn.close` cancelled at its first await
marks the connection closed and leaves its TCP socket open, and every later close skips
it; `close_host` closes such sockets. Real py-libp2p hosts on 127.0.0.1."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
from libp2p import new_host
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from p2pinfer.net.compat import cancelled_close
from p2pinfer.net.compat.cancelled_close import _tcp_socket, close_sockets, open_connections
from p2pinfer.net.host import run_host
from tests.integration.net_helpers import config
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

pytestmark = pytest.mark.network

LOCAL = Multiaddr("/ip4/127.0.0.1/tcp/0")


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(cancelled_close)


async def test_defect_stock_a_cancelled_close_leaves_the_socket_open_for_good() -> None:
    # If this fails, upstream closes a connection whatever cancels its close: drop
    # `close_sockets` from `close_host`.
    server, client = new_host(listen_addrs=[LOCAL]), new_host(listen_addrs=[LOCAL])
    with trio.fail_after(20):
        async with server.run(listen_addrs=[LOCAL]), client.run(listen_addrs=[LOCAL]):
            addr = f"{server.get_addrs()[0]}"
            await client.connect(info_from_p2p_addr(Multiaddr(addr)))
            [conn] = open_connections(client)
            sock = _tcp_socket(conn)
            assert sock is not None and sock.fileno() != -1
            with trio.CancelScope() as cancelled:
                cancelled.cancel()
                await conn.close()  # cut short at its first await
            assert conn.is_closed and sock.fileno() != -1
            with trio.CancelScope(shield=True):
                await conn.close()  # a later close, not cancelled: returns at once
            await client.close()  # nor does the host's own close reach it
            assert sock.fileno() != -1
            assert close_sockets([conn]) == 1 and sock.fileno() == -1
            await server.close()


async def test_a_host_torn_down_in_a_cancelled_scope_leaves_no_socket_open(
        monkeypatch: pytest.MonkeyPatch) -> None:
    dialled: list[Any] = []
    open_tcp_stream = trio.open_tcp_stream

    async def recording(*args: Any, **kwargs: Any) -> trio.SocketStream:
        stream = await open_tcp_stream(*args, **kwargs)
        dialled.append(stream)
        return stream

    monkeypatch.setattr(trio, "open_tcp_stream", recording)
    with trio.fail_after(20):
        async with run_host(config()) as server, trio.open_nursery() as nursery, \
                AsyncExitStack() as stack:
            client = await stack.enter_async_context(run_host(config()))
            await client.connect(server.addrs()[0])
            nursery.cancel_scope.cancel()  # the client's teardown runs cancelled
    assert len(dialled) == 1
    assert dialled[0].socket.fileno() == -1
