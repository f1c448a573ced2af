"""The auto-connector: stock py-libp2p 0.8.1 dials, unasked, a peer whose address anyone
put into the peerstore (a DHT record, identify); a host made `quiet` never does."""

from __future__ import annotations

from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.peer.id import ID

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.compat import auto_connect
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p


async def knocks_on_an_address_in_the_peerstore(*, quiet: bool) -> int:
    """Start a host whose peerstore holds one address (a TCP listener that counts the
    connections it gets), let its auto-connector run a round; the knocks counted."""
    knocked: list[None] = []

    async def count(stream: trio.SocketStream) -> None:
        knocked.append(None)
        await stream.aclose()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(trio.serve_listeners, count, listeners)
            host = new_host()
            if quiet:
                auto_connect.quiet(host)
            stranger = ID.from_base58(NodeIdentity.generate().peer_id)
            host.get_peerstore().add_addrs(
                stranger, [multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")], 3600)
            async with host.run(listen_addrs=[]):
                swarm: Any = host.get_network()
                await swarm.auto_connector.maybe_connect()  # a round, now
                with trio.move_on_after(2):
                    while not knocked:
                        await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    return len(knocked)


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(auto_connect)


async def test_defect_stock_libp2p_dials_what_the_peerstore_holds_on_its_own() -> None:
    # If this fails, upstream no longer auto-dials the peerstore: drop the workaround.
    assert await knocks_on_an_address_in_the_peerstore(quiet=False) >= 1


async def test_a_quiet_host_never_dials_a_peer_it_was_not_asked_to() -> None:
    assert await knocks_on_an_address_in_the_peerstore(quiet=True) == 0


async def test_every_node_host_is_quiet() -> None:
    from p2pinfer.net.host import run_host
    from tests.integration.net_helpers import config

    with trio.fail_after(20):
        async with run_host(config()) as net:
            swarm: Any = net._host.get_network()
            assert swarm.auto_connector.maybe_connect is auto_connect._dial_nobody
