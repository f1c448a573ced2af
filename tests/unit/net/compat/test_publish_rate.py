"""Attack 57: tiny gossip messages in bulk. py-libp2p 0.8.1 spawns a task for every
message of an inbound RPC on a topic we subscribe to, however many a peer sends: one RPC
of 1 MiB carries ~10,000 messages of a few bytes, each ~45 us of the node's loop (the
task, the seen-cache, the score gate, the signature check), and unsigned ones fail that
check without lowering the sender's score, so nothing ever stops them. Real p2pinfer
hosts on loopback; the attacker writes raw RPCs on its pubsub stream."""

from __future__ import annotations

import os

import pytest
import trio
import varint
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from p2pinfer.net.adverts import ADVERTS_TOPIC
from p2pinfer.net.compat import publish_rate
from p2pinfer.net.compat.publish_rate import PUBLISH_BURST, PUBLISH_RATE_PER_S
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from tests.integration.net_helpers import config, make_advert
from tests.support.waiting import await_until
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

pytestmark = pytest.mark.network


async def push_junk(attacker: NetHost, target: NetHost, count: int) -> None:
    """One RPC of `count` unsigned 8-byte messages on the adverts topic."""
    pubsub = attacker._pubsub
    rpc = rpc_pb2.RPC(publish=[rpc_pb2.Message(
        data=os.urandom(8), topicIDs=[ADVERTS_TOPIC], from_id=pubsub.my_id.to_bytes(),
        seqno=os.urandom(8)) for _ in range(count)])
    raw = rpc.SerializeToString()
    await pubsub.peers[ID.from_base58(target.peer_id)].write(varint.encode(len(raw)) + raw)


async def test_a_peer_pushing_tiny_messages_in_bulk_is_held_to_its_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with trio.fail_after(60):
        async with run_host(config(ip="127.0.0.2")) as target, \
                run_host(config()) as attacker, run_host(config(ip="127.0.0.3")) as honest:
            pushed = 0
            original = target._pubsub.push_msg

            async def counted(forwarder: ID, msg: rpc_pb2.Message) -> None:
                nonlocal pushed
                pushed += 1
                await original(forwarder, msg)

            monkeypatch.setattr(target._pubsub, "push_msg", counted)
            for peer in (attacker, honest):
                await peer.connect(target.addrs()[0])
                await target.wait_for_mesh(peer.peer_id, ADVERTS_TOPIC)
            started = trio.current_time()
            for _ in range(2):
                await push_junk(attacker, target, 10_000)
            # Another peer's own advert comes through all the same.
            await honest.publish(ADVERTS_TOPIC, make_advert(honest.config.identity, 1))
            await await_until(lambda: target.catalog.advert_of(honest.peer_id) is not None,
                              timeout_s=20)
            elapsed = trio.current_time() - started
    # All 20,000 tasks on the old code.
    assert pushed <= PUBLISH_BURST + PUBLISH_RATE_PER_S * elapsed + 10, (pushed, elapsed)


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(publish_rate)
