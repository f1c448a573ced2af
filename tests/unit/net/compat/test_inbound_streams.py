"""Attack: one peer's bare Yamux SYNs take a node's whole stream budget.

py-libp2p 0.8.1 admits every stream a peer opens and queues each for a place in the
swarm's one budget of 10,000 streams, which the node's own outbound streams wait on
too. Real p2pinfer hosts on 127.0.0.1; the attacker writes raw Yamux SYN frames on its
connection (120 KB for 10,050 streams), as any peer with a fresh key can.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest
import trio
from libp2p.peer.id import ID

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.compat import inbound_streams
from p2pinfer.net.compat.inbound_streams import SHARES_ATTR, StreamShares
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.ping import ping
from tests.support.waiting import await_until
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

pytestmark = pytest.mark.network

BUDGET = 10_000  # py-libp2p's default stream budget (the swarm's semaphore)
YAMUX_SYN = ("!BBHII", 0, 1, 1)  # version 0, WINDOW_UPDATE, flag SYN


def semaphore(net: NetHost) -> trio.Semaphore:
    sem = net._host.get_network()._stream_semaphore
    assert sem is not None
    return sem


async def send_syns(attacker: NetHost, target: NetHost, count: int, first: int) -> None:
    """`count` bare SYNs (odd stream ids from `first`) on `attacker`'s connection."""
    conns = attacker._host.get_network().connections.get(ID.from_base58(target.peer_id))
    conn = conns[0] if isinstance(conns, list) else conns
    fmt, *head = YAMUX_SYN
    frames = b"".join(struct.pack(fmt, *head, first + 2 * i, 0) for i in range(count))
    for at in range(0, len(frames), 6000):
        try:
            await conn.muxed_conn.secured_conn.write(frames[at:at + 6000])
        except Exception:  # the target closed the connection: nothing more goes
            return


def connected(a: NetHost, b: NetHost) -> bool:
    return b.peer_id in a.peers()


async def test_defect_one_peer_s_syns_take_the_whole_stream_budget() -> None:
    with trio.fail_after(90):
        async with run_host(NetConfig(NodeIdentity.generate())) as target, \
                run_host(NetConfig(NodeIdentity.generate())) as attacker:
            setattr(target._host.get_network(), SHARES_ATTR, None)  # libp2p's own path
            await attacker.connect(next(a for a in target.addrs() if "/tcp/" in a))
            await send_syns(attacker, target, BUDGET + 50, 100_001)
            await await_until(lambda: semaphore(target).value == 0, timeout_s=60)


async def test_a_syn_flood_is_refused_and_its_connection_closed() -> None:
    with trio.fail_after(90):
        async with run_host(NetConfig(NodeIdentity.generate())) as target, \
                run_host(NetConfig(NodeIdentity.generate())) as attacker, \
                run_host(NetConfig(NodeIdentity.generate())) as honest:
            shares = getattr(target._host.get_network(), SHARES_ATTR)
            await attacker.connect(next(a for a in target.addrs() if "/tcp/" in a))
            await honest.connect(next(a for a in target.addrs() if "/tcp/" in a))
            await send_syns(attacker, target, BUDGET + 50, 100_001)
            await await_until(lambda: shares.closed_for_abuse == 1, timeout_s=30)
            await await_until(lambda: not connected(target, attacker), timeout_s=10)
            assert shares.refused >= shares.abuse_close
            assert semaphore(target).value >= BUDGET - shares.per_connection - 10
            with trio.fail_after(5):
                await ping(honest, target.peer_id)
                await ping(target, honest.peer_id)
            await await_until(lambda: semaphore(target).value >= BUDGET - 10, timeout_s=20)


async def test_one_address_s_streams_count_over_all_its_connections() -> None:
    with trio.fail_after(60):
        async with run_host(NetConfig(NodeIdentity.generate())) as target, \
                run_host(NetConfig(NodeIdentity.generate())) as first, \
                run_host(NetConfig(NodeIdentity.generate())) as second:
            shares = inbound_streams.attach(target._host.get_network(), StreamShares(
                per_address=8, limit_loopback=True))
            addr = next(a for a in target.addrs() if "/tcp/" in a)
            await first.connect(addr)
            await second.connect(addr)
            await send_syns(first, target, 8, 200_001)
            await send_syns(second, target, 8, 200_001)
            # 16 streams from one address (and the hosts' own: identify, gossip): 8 held.
            await await_until(lambda: shares.refused >= 8
                              and shares.by_address["127.0.0.1"] == 8, timeout_s=10)


def test_inbound_streams_leave_the_budget_s_last_places_to_our_own() -> None:
    shares = StreamShares(per_connection=4, outbound_reserve=100)
    swarm = SimpleNamespace(_stream_semaphore=trio.Semaphore(BUDGET))
    conn = SimpleNamespace(swarm=swarm, p2pinfer_inbound_held=3)
    assert shares.refusal(conn, None) is None
    conn.p2pinfer_inbound_held = 4
    assert "4 inbound streams open on the connection" in (shares.refusal(conn, None) or "")
    conn.p2pinfer_inbound_held = 0
    swarm._stream_semaphore = trio.Semaphore(100)
    assert "kept for our own streams" in (shares.refusal(conn, None) or "")
    with pytest.raises(ValueError):
        StreamShares(per_connection=0)


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(inbound_streams)
