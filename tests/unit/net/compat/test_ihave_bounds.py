"""Attack: IHAVEs on made-up topics, and IHAVEs of 10,000 ids.

py-libp2p 0.8.1 rate-limits IHAVEs per peer and topic, keeps that state for any topic
name, and asks (IWANT) for every unseen id, topics it never joined included. Real
p2pinfer hosts on 127.0.0.1; the attacker's IHAVEs go straight to the target's router.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import trio
from libp2p.pubsub.pb import rpc_pb2

from p2pinfer.bounded import first_distinct
from p2pinfer.net.compat import ihave_bounds
from p2pinfer.net.compat.ihave_bounds import MAX_IDS
from tests.unit.net.compat import gossip_router
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

pytestmark = pytest.mark.network

TOPIC = "test/ihave"


def made_up_ids(count: int) -> list[bytes]:
    return [os.urandom(46).hex().encode() for _ in range(count)]


def target_router() -> Any:
    """(the target's GossipSub, joined to TOPIC; the attacker's peer id; the number of
    ids in each IWANT the target sends from here on)."""
    return gossip_router.target_router(
        TOPIC, lambda control: (len(iwant.messageIDs) for iwant in control.iwant))


async def test_defect_ihaves_on_made_up_topics_are_asked_for_in_full() -> None:
    with trio.fail_after(60):
        async with target_router() as (router, attacker, asked):
            ids = made_up_ids(2000)
            for n in range(5):
                await ihave_bounds.ORIGINAL(
                    router, rpc_pb2.ControlIHave(topicID=f"made/up/{n}", messageIDs=ids),
                    attacker)
            assert asked == [2000] * 5
            assert len(router.ihave_message_limits[attacker]) == 5


async def test_ihaves_are_asked_for_only_on_joined_topics_and_within_a_budget() -> None:
    with trio.fail_after(60):
        async with target_router() as (router, attacker, asked):
            ids = made_up_ids(12_000)
            for n in range(5):
                await router.handle_ihave(
                    rpc_pb2.ControlIHave(topicID=f"made/up/{n}", messageIDs=ids), attacker)
            assert asked == [] and not router.ihave_message_limits[attacker]
            await router.handle_ihave(
                rpc_pb2.ControlIHave(topicID=TOPIC, messageIDs=ids + ids), attacker)
            await router.handle_ihave(rpc_pb2.ControlIHave(topicID=TOPIC, messageIDs=ids),
                                      attacker)
            assert asked == [MAX_IDS]  # the second IHAVE: the peer's budget for 1 s is spent


def test_ids_are_read_once_and_up_to_the_limit() -> None:
    ids = [str(n).encode() for n in range(10)]
    assert first_distinct([*ids, *ids], 100) == ids
    assert first_distinct(ids, 3) == ids[:3]


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(ihave_bounds)
