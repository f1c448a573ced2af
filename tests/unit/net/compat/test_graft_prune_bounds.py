"""Attack 59: GRAFTs and PRUNEs on made-up topics.

py-libp2p 0.8.1 answers a GRAFT for a topic the node never joined with a PRUNE (an RPC
with our signed peer record) each time, and a GRAFT during backoff the same way: one
RPC of 20,000 GRAFTs (320 KB) made 20,000 PRUNEs, ~6 CPU-s in one process. A PRUNE for
any topic name stores backoff and flood-tracking state for that name. go-libp2p-pubsub
ignores both for topics it has no mesh in ("spam hardening"). Real p2pinfer hosts on
127.0.0.1; the attacker's control messages go straight to the target's router.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from p2pinfer.net.compat import graft_prune_bounds
from tests.unit.net.compat import gossip_router
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

pytestmark = pytest.mark.network

TOPIC = "test/graft"


def made_up_topics(count: int) -> list[str]:
    return [f"made/up/{os.urandom(6).hex()}" for _ in range(count)]


def target_router() -> Any:
    """(the target's GossipSub, joined to TOPIC; the attacker's peer id; the topics of the
    PRUNEs the target sends from here on)."""
    return gossip_router.target_router(
        TOPIC, lambda control: (prune.topicID for prune in control.prune))


def topic_state(router: Any, peer: ID) -> int:
    """Entries the router keeps per topic name for `peer` (backoff, flood tracking)."""
    backoff = sum(1 for peers in router.back_off.values() if peer in peers)
    return backoff + len(router.graft_flood_tracking.get(peer, {}))


async def test_defect_grafts_and_prunes_on_made_up_topics_are_answered_and_kept() -> None:
    with trio.fail_after(60):
        async with target_router() as (router, attacker, pruned):
            for topic in made_up_topics(200):
                await graft_prune_bounds.ORIGINAL_GRAFT(
                    router, rpc_pb2.ControlGraft(topicID=topic), attacker)
                await graft_prune_bounds.ORIGINAL_PRUNE(
                    router, rpc_pb2.ControlPrune(topicID=topic, backoff=60), attacker)
            assert len(pruned) == 200
            assert topic_state(router, attacker) >= 200


async def test_grafts_and_prunes_count_only_on_joined_topics_and_repeats_are_not_answered(
) -> None:
    with trio.fail_after(60):
        async with target_router() as (router, attacker, pruned):
            for topic in made_up_topics(2_000):
                await router.handle_graft(rpc_pb2.ControlGraft(topicID=topic), attacker)
                await router.handle_prune(rpc_pb2.ControlPrune(topicID=topic, backoff=60),
                                          attacker)
            assert pruned == [] and topic_state(router, attacker) == 0
            # On a joined topic: a PRUNE, then GRAFTs during its backoff, each answered
            # with a PRUNE on the old code; now one answer a second.
            await router.handle_prune(rpc_pb2.ControlPrune(topicID=TOPIC, backoff=60),
                                      attacker)
            for _ in range(1_000):
                await router.handle_graft(rpc_pb2.ControlGraft(topicID=TOPIC), attacker)
            assert pruned == [TOPIC]
            assert topic_state(router, attacker) <= 2


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(graft_prune_bounds)
