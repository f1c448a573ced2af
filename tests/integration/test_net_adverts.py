"""Adverts on GossipSub between real libp2p hosts: relaying, and what is dropped."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.advert_gate import ADVERT_SIGNER_BURST, ADVERTS_PER_SIGNER_PER_S
from p2pinfer.net.adverts import ADVERTS_TOPIC, verify_advert
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from tests.integration.net_helpers import HARDWARE, advert_template, config, make_advert

pytestmark = pytest.mark.network

LIMIT = 4096


@asynccontextmanager
async def line_of_three(**kw: object) -> AsyncIterator[tuple[NetHost, NetHost, NetHost]]:
    """A-B-C: A and C each know only B and refuse each other's address, so
    everything between them is relayed by B."""
    async with AsyncExitStack() as stack:
        b = await stack.enter_async_context(run_host(config(ip="127.0.0.2", **kw)))
        a = await stack.enter_async_context(
            run_host(config(ip="127.0.0.1", deny_ips=("127.0.0.3",), **kw))
        )
        c = await stack.enter_async_context(
            run_host(config(ip="127.0.0.3", deny_ips=("127.0.0.1",), **kw))
        )
        await a.connect(b.addrs()[0])
        await c.connect(b.addrs()[0])
        await b.wait_for_mesh(a.peer_id, ADVERTS_TOPIC)
        await b.wait_for_mesh(c.peer_id, ADVERTS_TOPIC)
        await a.wait_for_mesh(b.peer_id, ADVERTS_TOPIC)
        yield a, b, c


async def until(condition: Callable[[], bool]) -> None:
    """Poll a condition the network changes asynchronously (bounded by the caller)."""
    while not condition():
        await trio.sleep(0.02)


async def test_advert_crosses_a_line_of_three_hosts() -> None:
    with trio.fail_after(30):
        async with line_of_three() as (a, b, c):
            ident_a = a.config.identity
            await a.publish_advert(make_advert(ident_a, 1, models=(("qwen2:0.5b", 250),)))
            await c.catalog.wait_for(lambda cat: a.peer_id in cat.peer_ids())
            [entry] = c.catalog.providers("qwen2:0.5b")
            assert (entry.peer_id, entry.price_per_1k, entry.generation_tps) == (
                a.peer_id,
                250,
                25.0,
            )
            assert entry.hardware == HARDWARE and entry.offer.context_length == 2048
            assert a.peer_id not in c.peers()  # it came through B
            assert b.catalog.advert_of(a.peer_id) is not None


async def test_forged_and_oversized_adverts_are_dropped_and_not_relayed() -> None:
    with trio.fail_after(30):
        async with line_of_three(max_advert_bytes=LIMIT) as (mallory, b, c):
            # Mallory runs modified code: its own validator would refuse these.
            mallory._pubsub.remove_topic_validator(ADVERTS_TOPIC)
            victim = NodeIdentity.generate()
            forged = make_advert(victim, 1)  # a valid signature, but not Mallory's
            many = tuple((f"model-{i}", 100) for i in range(40))
            oversized = make_advert(mallory.config.identity, 1, models=many)
            assert len(oversized) > LIMIT  # validly signed, but too big for the topic
            await mallory.publish(ADVERTS_TOPIC, forged)
            await mallory.publish(ADVERTS_TOPIC, oversized)
            drops = b.advert_gate.drops
            await until(lambda: (drops["forged"], drops["oversized"]) == (1, 1))
            await mallory.publish(ADVERTS_TOPIC, make_advert(mallory.config.identity, 2))
            await c.catalog.wait_for(lambda cat: mallory.peer_id in cat.peer_ids())
            assert c.catalog.advert_of(mallory.peer_id).seq == 2  # type: ignore[union-attr]
            assert victim.peer_id not in c.catalog.peer_ids()
            assert victim.peer_id not in b.catalog.peer_ids()
            assert c.advert_gate.drops["forged"] == c.advert_gate.drops["oversized"] == 0


async def test_stale_seq_is_dropped() -> None:
    with trio.fail_after(30):
        async with line_of_three() as (a, b, c):
            ident = a.config.identity
            await a.publish_advert(make_advert(ident, 5, models=(("m5", 1),)))
            await c.catalog.wait_for(lambda cat: a.peer_id in cat.peer_ids())
            a._pubsub.remove_topic_validator(ADVERTS_TOPIC)  # an old advert, replayed
            await a.publish(ADVERTS_TOPIC, make_advert(ident, 4, models=(("m4", 1),)))
            await a.publish(ADVERTS_TOPIC, make_advert(ident, 5, models=(("m5b", 1),)))
            await until(lambda: b.advert_gate.drops["seq"] == 2)
            await a.publish(ADVERTS_TOPIC, make_advert(ident, 6, models=(("m6", 1),)))
            await c.catalog.wait_for(lambda cat: cat.models() == ["m6"])
            assert c.advert_gate.drops["seq"] == 0  # B never relayed the stale ones


async def test_own_stale_advert_is_refused_before_publishing() -> None:
    from p2pinfer.errors import ValidationError

    with trio.fail_after(30):
        async with run_host(config()) as a:
            await a.publish_advert(make_advert(a.config.identity, 3))
            with pytest.raises(ValidationError):
                await a.publish_advert(make_advert(a.config.identity, 3))
            with pytest.raises(ValidationError):
                await a.publish_advert(make_advert(NodeIdentity.generate(), 9))


async def test_provider_that_stops_advertising_leaves_the_catalog_after_its_ttl() -> None:
    with trio.fail_after(30):
        async with line_of_three(expire_interval_s=0.1) as (a, b, c):
            b.start_advertising(lambda: advert_template(ttl_ms=1_500), interval_s=0.3)
            await a.publish_advert(make_advert(a.config.identity, 1, ttl_ms=1_500))
            await c.catalog.wait_for(lambda cat: {a.peer_id, b.peer_id} <= set(cat.peer_ids()))
            [entry_a] = [e for e in c.catalog.providers("smollm2:135m") if e.peer_id == a.peer_id]
            await c.catalog.wait_for(lambda cat: a.peer_id not in cat.peer_ids())
            assert c.catalog.now_ms() >= entry_a.expires_at_ms  # not before its TTL
            assert b.peer_id in c.catalog.peer_ids()  # B keeps re-advertising, so it stays
            assert a.peer_id in b.peers()  # A left the catalog, not the network


async def test_node_stamps_its_adverts_with_its_addresses_and_a_rising_seq() -> None:
    clock = [2_000_000_000_000]
    with trio.fail_after(30):
        async with run_host(config(clock_ms=lambda: clock[0])) as a:
            first = verify_advert(a.sign_advert(advert_template()))
            clock[0] -= 60_000  # the wall clock stepped back
            second = verify_advert(a.sign_advert(advert_template()))
            assert first.signer == second.signer == a.peer_id
            assert second.seq > first.seq
            assert first.advert.listen_addrs == tuple(a.addrs())
            assert first.issued_at_ms == 2_000_000_000_000


async def test_a_signer_re_advertising_at_gossip_rate_is_held_to_its_own_rate() -> None:
    """Attack 51: a known signer may publish a new `seq` as often as it likes, and
    GossipSub let a peer forward 200 messages a second: each advert, up to 64 KiB, was
    admitted and relayed by every node. Now a signer's adverts are relayed at most
    `ADVERTS_PER_SIGNER_PER_S` a second after a burst of `ADVERT_SIGNER_BURST`."""
    with trio.fail_after(30):
        async with line_of_three() as (mallory, b, c):
            mallory._pubsub.remove_topic_validator(ADVERTS_TOPIC)  # modified code
            ident = mallory.config.identity
            await mallory.publish(ADVERTS_TOPIC, make_advert(ident, 1))
            await c.catalog.wait_for(lambda cat: mallory.peer_id in cat.peer_ids())
            before, sent = c.advert_gate.accepted, 100
            started = trio.current_time()
            for seq in range(2, 2 + sent):  # 50 a second, a quarter of GossipSub's cap
                await mallory.publish(ADVERTS_TOPIC, make_advert(ident, seq))
                await trio.sleep(0.02)
            gate = b.advert_gate  # until B has judged all that reaches it, for a second
            judged = -1
            while judged != (judged := gate.accepted + sum(gate.drops.values())):
                await trio.sleep(1.0)
            elapsed = trio.current_time() - started
            relayed = c.advert_gate.accepted - before
    most = ADVERT_SIGNER_BURST + ADVERTS_PER_SIGNER_PER_S * elapsed
    assert relayed <= most < sent, (relayed, most, elapsed, dict(b.advert_gate.drops))
    # (B's GossipSub scores down a peer whose messages its validator refuses, and after a
    # few stops taking them at all: not every advert Mallory sent reached the gate.)
    assert b.advert_gate.drops["signer rate"] > 0
