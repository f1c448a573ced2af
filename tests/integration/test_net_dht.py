"""Finding a model's providers through Kademlia, across nodes the consumer never dialled."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
import trio

from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from tests.integration.net_helpers import advert_template, config

pytestmark = pytest.mark.network

MODEL = "smollm2:135m"


async def find_until_found(net: NetHost, model: str, want: set[str]) -> set[str]:
    """Look up `model` until the providers in `want` are all found (bounded by the caller)."""
    while True:
        found = {ref.peer_id for ref in await net.find_providers(model)}
        if want <= found:
            return found
        await trio.sleep(0.1)


async def test_consumer_bootstrapped_through_two_nodes_finds_provider_and_its_advert() -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            n1 = await stack.enter_async_context(run_host(config()))
            n2 = await stack.enter_async_context(run_host(config(bootstrap=(n1.addrs()[0],))))
            provider = await stack.enter_async_context(run_host(config(bootstrap=(n1.addrs()[0],))))
            provider.start_advertising(
                lambda: advert_template(models=((MODEL, 70),)), interval_s=5.0
            )
            consumer = await stack.enter_async_context(run_host(config(bootstrap=(n2.addrs()[0],))))

            found = await find_until_found(consumer, MODEL, {provider.peer_id})
            assert found == {provider.peer_id}  # relays do not claim the model

            [fetched] = await consumer.lookup_providers(MODEL)
            assert fetched.advert.signer == provider.peer_id
            assert fetched.advert.raw == provider.local_advert
            assert fetched.rtt_ms > 0
            assert consumer.catalog.advert_of(provider.peer_id) is not None


async def test_provider_joining_after_a_lookup_is_found_by_the_next_lookup() -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            boot = await stack.enter_async_context(run_host(config()))
            joined = (boot.addrs()[0],)
            first = await stack.enter_async_context(run_host(config(bootstrap=joined)))
            await first.provide(MODEL)
            consumer = await stack.enter_async_context(run_host(config(bootstrap=joined)))
            await find_until_found(consumer, MODEL, {first.peer_id})

            # py-libp2p's own find_providers would now answer from its cache alone.
            second = await stack.enter_async_context(run_host(config(bootstrap=joined)))
            await second.provide(MODEL)
            found = await find_until_found(consumer, MODEL, {first.peer_id, second.peer_id})
            assert found == {first.peer_id, second.peer_id}


async def test_model_nobody_serves_has_no_providers() -> None:
    with trio.fail_after(30):
        async with (
            run_host(config()) as boot,
            run_host(config(bootstrap=(boot.addrs()[0],))) as consumer,
        ):
            await boot.provide(MODEL)
            assert await consumer.find_providers("no-such-model") == []
            assert await consumer.lookup_providers("no-such-model") == []


async def test_lookup_whose_walk_stalls_is_bounded_and_asks_connected_peers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Seen in bench/scale.py: on 50 starved nodes the closest-peer walk ran to
    # py-libp2p's 30 s cap and cold consumers found no provider. A walk that never
    # ends (the fake below) must neither hang the lookup nor hide the provider record
    # our connected neighbour holds.
    from p2pinfer.net import dht

    monkeypatch.setattr(dht, "CLOSEST_LOOKUP_TIMEOUT_S", 1.0)

    async def stalled_walk(key: bytes) -> list[object]:
        await trio.sleep_forever()
        return []

    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            n1 = await stack.enter_async_context(run_host(config()))
            provider = await stack.enter_async_context(run_host(config(bootstrap=(n1.addrs()[0],))))
            provider.start_advertising(
                lambda: advert_template(models=((MODEL, 70),)), interval_s=5.0
            )
            consumer = await stack.enter_async_context(run_host(config(bootstrap=(n1.addrs()[0],))))
            await find_until_found(consumer, MODEL, {provider.peer_id})  # n1 holds the record
            consumer.records._dht.provider_store.providers.clear()  # a cold cache again
            monkeypatch.setattr(consumer.records._dht.peer_routing,
                                "find_closest_peers_network", stalled_walk)
            started = trio.current_time()
            found = {ref.peer_id for ref in await consumer.find_providers(MODEL)}
            assert provider.peer_id in found
            assert trio.current_time() - started < 10
