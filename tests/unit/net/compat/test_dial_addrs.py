"""Dialling a peer at its own address when others planted theirs ahead of it: stock
py-libp2p 0.8.1's `host.connect` dials only the first TCP address its peerstore holds;
`dial_addrs.connect` dials the preferred ones first and tries the rest. Real py-libp2p
hosts on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from p2pinfer.errors import PeerUnreachableError
from p2pinfer.identity import NodeIdentity
from p2pinfer.net.compat import dial_addrs
from p2pinfer.net.compat.auto_connect import quiet
from p2pinfer.net.compat.dial_addrs import MAX_DIAL_ADDRS, connect, connect_info, dialable
from p2pinfer.net.compat.listeners import listening
from tests.integration.net_helpers import mute_addr
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

pytestmark = pytest.mark.network


@asynccontextmanager
async def running(**connection: object) -> AsyncIterator[IHost]:
    host = new_host(connection_config=ConnectionConfig(**connection))  # type: ignore[arg-type]
    quiet(host)
    async with listening(host, [Multiaddr("/ip4/127.0.0.1/tcp/0")], ["127.0.0.1"]):
        yield host  # closed on the way out, its connections too (compat.listeners)


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(dial_addrs)


async def test_defect_stock_connect_dials_only_a_planted_address_ahead_of_the_peers_own() -> None:
    with trio.fail_after(30):
        async with mute_addr() as silent, running() as target, running() as caller:
            caller.get_peerstore().add_addrs(target.get_id(), [silent.addr], 3600)
            with trio.move_on_after(3) as waited:
                await caller.connect(PeerInfo(target.get_id(), target.get_addrs()))
            assert waited.cancelled_caught  # its own address was never dialled
            assert target.get_id() not in caller.get_connected_peers()


async def test_the_peers_own_address_is_dialled_first_and_a_planted_one_costs_nothing() -> None:
    with trio.fail_after(30):
        async with mute_addr() as silent, running() as target, running() as caller:
            caller.get_peerstore().add_addrs(target.get_id(), [silent.addr], 3600)
            started = trio.current_time()
            await connect_info(caller, PeerInfo(target.get_id(), target.get_addrs()))
            assert trio.current_time() - started < dial_addrs.STAGGER_S
            assert target.get_id() in caller.get_connected_peers()


async def test_with_no_word_from_the_peer_each_stored_address_is_tried_in_turn() -> None:
    with trio.fail_after(30):
        async with mute_addr() as silent, running() as target, running() as caller:
            caller.get_peerstore().add_addrs(
                target.get_id(), [silent.addr, *target.get_addrs()], 3600)
            conn = await connect(caller.get_network(), target.get_id())
            assert conn.muxed_conn.peer_id == target.get_id()
            assert await connect(caller.get_network(), target.get_id()) is conn  # held


async def test_an_address_answered_by_another_key_clears_nothing() -> None:
    # py-libp2p's retrying dial clears all the peer's addresses on a peer id mismatch.
    with trio.fail_after(30):
        async with running() as impostor, running() as target, running() as caller:
            store = caller.get_peerstore()
            store.add_addrs(target.get_id(), [*impostor.get_addrs(), *target.get_addrs()], 3600)
            await connect(caller.get_network(), target.get_id())
            assert set(target.get_addrs()) <= set(store.addrs(target.get_id()))


async def test_nothing_dialable_is_a_clear_failure() -> None:
    with trio.fail_after(30):
        async with running(deny_list=["127.0.0.0/8"]) as caller:
            nobody = ID.from_base58(NodeIdentity.generate().peer_id)
            with pytest.raises(PeerUnreachableError, match="no address"):
                await connect(caller.get_network(), nobody)
            caller.get_peerstore().add_addrs(nobody, [Multiaddr("/ip4/127.0.0.1/tcp/9")], 60)
            with pytest.raises(PeerUnreachableError, match="no address"):  # denied
                await connect(caller.get_network(), nobody)


async def test_the_candidates_are_bounded_deduplicated_and_dialable() -> None:
    with trio.fail_after(30):
        async with running(deny_list=["10.0.0.0/8"]) as caller:
            relay = NodeIdentity.generate().peer_id
            addrs = [Multiaddr(f"/ip4/127.0.0.1/tcp/{4000 + i}") for i in range(20)]
            odd = [Multiaddr("/ip4/10.1.2.3/tcp/1"),  # denied
                   Multiaddr(f"/ip4/127.0.0.1/tcp/1/p2p/{relay}/p2p-circuit"),
                   Multiaddr("/ip4/127.0.0.1/udp/5")]  # no transport of ours
            same = Multiaddr(f"{addrs[0]}/p2p/{relay}")
            got = await dialable(caller.get_network(), [*odd, addrs[0], same, *addrs])
            assert got == addrs[:MAX_DIAL_ADDRS]


async def test_concurrent_connects_to_one_peer_share_one_dial() -> None:
    with trio.fail_after(30):
        async with running() as target, running(max_connections_per_peer=1) as caller:
            caller.get_peerstore().add_addrs(target.get_id(), target.get_addrs(), 3600)
            got: list[object] = []

            async def one() -> None:
                got.append(await connect(caller.get_network(), target.get_id()))

            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(one)
            assert len(got) == 4 and all(conn is got[0] for conn in got)
            assert len(caller.get_network().get_connections(target.get_id())) == 1
