"""Attack: one IWANT naming one cached message 10,000 times.

py-libp2p 0.8.1 answers each id an IWANT lists, duplicates included, however often the
peer asked before: a 940 KB IWANT made a node queue a 16.7 MB answer. Real p2pinfer
hosts on 127.0.0.1; the target publishes a message, the attacker (a subscriber, so it
heard the message's id) asks for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.compat import iwant_bounds
from p2pinfer.net.compat.iwant_bounds import MAX_IDS, RETRANSMISSIONS, wanted_ids
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

pytestmark = pytest.mark.network

TOPIC = "test/iwant"
BODY = b"x" * 1500


@asynccontextmanager
async def cached_message() -> AsyncIterator[tuple[Any, bytes, ID, list[int]]]:
    """(the target's GossipSub, the wire id of a message in its cache, the attacker's
    peer id, the sizes of the RPCs the target sends from here on)."""
    async with run_host(NetConfig(NodeIdentity.generate())) as target, \
            run_host(NetConfig(NodeIdentity.generate())) as attacker:
        await attacker.connect(next(a for a in target.addrs() if "/tcp/" in a))
        router = target._pubsub.router
        await target._pubsub.subscribe(TOPIC)
        heard = await attacker._pubsub.subscribe(TOPIC)
        await trio.sleep(1.5)  # the subscriptions are known both ways
        await target._pubsub.publish(TOPIC, BODY)
        with trio.fail_after(10):
            await heard.get()
        [cached] = [mid for mid, msg in router.mcache.msgs.items() if msg.data == BODY]
        sent: list[int] = []
        send_rpc = router.send_rpc

        def counting(peer_id: ID, rpc: rpc_pb2.RPC, priority: bool = False) -> None:
            sent.append(rpc.ByteSize())
            send_rpc(peer_id, rpc, priority)

        router.send_rpc = counting
        yield router, cached.hex().encode(), ID.from_base58(attacker.peer_id), sent


async def test_defect_an_iwant_is_answered_once_per_id_listed() -> None:
    with trio.fail_after(60):
        async with cached_message() as (router, wire_id, attacker, sent):
            iwant = rpc_pb2.ControlIWant(messageIDs=[wire_id] * 2000)
            await iwant_bounds.ORIGINAL(router, iwant, attacker)
            assert sum(sent) > 2000 * len(BODY)


async def test_an_iwant_flood_gets_each_message_at_most_three_times() -> None:
    with trio.fail_after(60):
        async with cached_message() as (router, wire_id, attacker, sent):
            iwant = rpc_pb2.ControlIWant(messageIDs=[wire_id] * 10_000)  # ~940 KB
            for _ in range(5):
                await router.handle_iwant(iwant, attacker)
            assert len(sent) == RETRANSMISSIONS
            assert sum(sent) < RETRANSMISSIONS * (len(BODY) + 1000)


def test_an_iwant_is_read_once_per_id_and_up_to_5000_ids() -> None:
    asked: Counter[bytes] = Counter()
    ids = [str(n).encode() for n in range(6000)]
    assert wanted_ids([*ids[:3], *ids[:3]], asked) == ids[:3]
    assert len(wanted_ids(ids, Counter())) == MAX_IDS
    asked = Counter()
    for _ in range(RETRANSMISSIONS):
        assert wanted_ids(ids[:1], asked) == ids[:1]
    assert wanted_ids(ids[:1], asked) == []


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(iwant_bounds)
