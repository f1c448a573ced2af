"""Host listeners: stock py-libp2p 0.8.1's `host.run` neither reports a failed bind nor
closes its listeners on exit; `listening` does both. Real py-libp2p hosts on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio
from libp2p import new_host
from libp2p.abc import IHost
from multiaddr import Multiaddr

from p2pinfer.errors import NetworkError
from p2pinfer.net.compat import listeners
from p2pinfer.net.compat.listeners import close_host, listening
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

pytestmark = pytest.mark.network


@contextmanager
def taken_port() -> Iterator[int]:
    """A 127.0.0.1 TCP port some other socket is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def addr(port: int) -> Multiaddr:
    return Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")


async def accepts(port: int) -> bool:
    """Whether a TCP connection to 127.0.0.1:`port` is accepted."""
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    await stream.aclose()
    return True


def host() -> IHost:
    return new_host(listen_addrs=[addr(0)])


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(listeners)


async def test_defect_stock_host_run_starts_although_the_bind_failed() -> None:
    # If this fails, upstream raises on a failed bind: half of `listening` can go.
    stock = host()
    with taken_port() as port, trio.fail_after(10):
        async with stock.run(listen_addrs=[addr(port)]):
            assert stock.get_transport_addrs() == []
        await close_host(stock)


async def test_defect_stock_listener_outlives_host_run() -> None:
    # If this fails, upstream closes listeners on exit: the other half can go.
    stock = host()
    with trio.fail_after(10):
        async with stock.run(listen_addrs=[addr(0)]):
            port = int(stock.get_transport_addrs()[0].value_for_protocol("tcp"))
        try:
            assert await accepts(port)
        finally:
            await close_host(stock)


async def test_a_failed_bind_is_a_network_error() -> None:
    with (taken_port() as port, trio.fail_after(10),
          pytest.raises(NetworkError, match="cannot listen on")):
        async with listening(host(), [addr(port)], [f"/ip4/127.0.0.1/tcp/{port}"]):
            pytest.fail("started without listening")


async def test_the_port_is_closed_once_listening_ends() -> None:
    ours = host()
    with trio.fail_after(10):
        async with listening(ours, [addr(0)], ["/ip4/127.0.0.1/tcp/0"]):
            port = int(ours.get_transport_addrs()[0].value_for_protocol("tcp"))
            assert await accepts(port)
        assert not await accepts(port)
