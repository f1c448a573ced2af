"""Attack 43: a relay holds a NATed provider's slot and brings it no circuits
(p2pinfer/net/relay_check.py).

A relay that takes slots and refuses every circuit left a provider behind NAT
unreachable through it, its adverts still naming the relay, and the provider never
knew: attack 40 made such relays less likely to be picked, not noticed. Now a node
asks helpers to reach it through each of its relays, and drops one through which no
connection comes for two helpers in a row. Real hosts on 127.0.0.x.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
import trio
from libp2p.peer.id import ID

from p2pinfer.errors import NetworkError
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.relay_check import CHECK_EVERY_S, CHECK_PROTOCOL, RETRY_S
from p2pinfer.net.relay_rules import RelayClientConfig, circuit_addr
from tests.integration.net_helpers import config
from tests.integration.test_net_relay_limits import MANUAL, limits, relay_addr, start
from tests.support.waiting import await_until

pytestmark = pytest.mark.network


async def relay_at(stack: AsyncExitStack, ip: str, **kw: int) -> NetHost:
    return await stack.enter_async_context(run_host(config(
        ip=ip, autonat=MANUAL, relay_client=RelayClientConfig(auto=False), relay=limits(**kw))))


async def helping(stack: AsyncExitStack, provider: NetHost, relays: list[NetHost]) -> NetHost:
    """A peer connected to the provider and to the relays, known to serve checks."""
    helper = await start(stack)
    for peer in (provider, *relays):
        await helper.connect(relay_addr(peer))
    store, pid = provider._host.get_peerstore(), ID.from_base58(helper.peer_id)
    await await_until(lambda: bool(store.supports_protocols(pid, [CHECK_PROTOCOL])))
    return helper


async def test_a_relay_that_holds_the_slot_and_refuses_circuits_is_dropped() -> None:
    with trio.fail_after(90):
        async with AsyncExitStack() as stack:
            blackhole = await relay_at(stack, "127.0.0.2", max_circuits=0)
            honest = await relay_at(stack, "127.0.0.4")
            provider = await start(stack)
            for relay in (blackhole, honest):
                assert await provider.relay_client.reserve(relay_addr(relay))
            for _ in range(2):
                await helping(stack, provider, [blackhole, honest])
            check = provider.relay_check

            assert await check.check(honest.peer_id) == CHECK_EVERY_S  # passed
            assert await check.check(blackhole.peer_id) == RETRY_S  # one strike: kept
            assert blackhole.peer_id in provider.relay_client.slots
            assert await check.check(blackhole.peer_id) == RETRY_S  # a 2nd helper: dropped
            assert set(provider.relay_client.slots) == {honest.peer_id}
            assert not any(blackhole.peer_id in a for a in provider.addrs())
            assert check.is_shunned(blackhole.peer_id) and check.failed == 2
            # Not picked again while shunned (the node reserves by itself when private).
            candidates = provider.relay_client._relay_candidates(set())
            assert not any(blackhole.peer_id in c for c in candidates)
            assert blackhole.relay_hop.refusals["circuits"] == 2
            assert honest.peer_id in provider.relay_client.slots and check.passed == 1


async def test_one_lying_helper_cannot_make_a_node_leave_a_good_relay() -> None:
    with trio.fail_after(90):
        async with AsyncExitStack() as stack:
            relay = await relay_at(stack, "127.0.0.4")
            provider = await start(stack)
            assert await provider.relay_client.reserve(relay_addr(relay))
            liar = await helping(stack, provider, [relay])

            async def lie(asker: str, addr: str, relay_info: object) -> str:
                return "refused:NO_RESERVATION"  # and never tries

            liar.relay_check._try = lie  # type: ignore[method-assign,assignment]
            assert await provider.relay_check.check(relay.peer_id) == RETRY_S
            assert provider.relay_check.failed == 1
            await helping(stack, provider, [relay])  # an honest one joins
            assert await provider.relay_check.check(relay.peer_id) == CHECK_EVERY_S
            assert relay.peer_id in provider.relay_client.slots
            # The strike is forgotten; whichever helper comes next, a lie is never the
            # second strike (the next check asks someone else).
            for _ in range(3):
                await provider.relay_check.check(relay.peer_id)
                assert relay.peer_id in provider.relay_client.slots


async def test_a_helper_connects_only_to_the_asker_and_only_so_often() -> None:
    with trio.fail_after(90):
        async with AsyncExitStack() as stack:
            relay = await relay_at(stack, "127.0.0.4")
            provider, stranger = await start(stack), await start(stack)
            for node in (provider, stranger):
                assert await node.relay_client.reserve(relay_addr(relay))
            helper = await helping(stack, provider, [relay])

            async def ask(addr: str) -> bytes | None:
                stream = await provider.open_stream(helper.peer_id, CHECK_PROTOCOL)
                try:
                    await stream.write_frame(addr.encode())
                    return await stream.read_frame(max_size=64, timeout_s=15)
                except NetworkError:  # reset: refused
                    return None
                finally:
                    await stream.close()

            # Someone else's circuit: the helper would be a free dialler for anyone.
            assert await ask(circuit_addr(relay_addr(relay), relay.peer_id,
                                          stranger.peer_id)) is None
            # A relay the helper is not connected to, at a loopback address: no dial into
            # the helper's own machine or network for a stranger.
            assert await ask(circuit_addr("/ip4/127.0.0.9/tcp/4001", stranger.peer_id,
                                          provider.peer_id)) is None
            assert relay.relay_hop.circuits == 0 and sum(relay.relay_hop.refusals.values()) == 0
            own = circuit_addr(relay_addr(relay), relay.peer_id, provider.peer_id)
            answers = [await ask(own) for _ in range(7)]
            assert answers == [b"ok"] * 6 + [None]  # 6 a minute from one asker


async def test_full_from_a_relay_that_brought_a_circuit_lately_is_no_strike() -> None:
    # A popular provider's relay may be full of its consumers' circuits: "full" counts
    # against a relay only when it brought the node nothing in the last 15 minutes.
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            full = await relay_at(stack, "127.0.0.2", max_circuits=0)
            provider = await start(stack)
            assert await provider.relay_client.reserve(relay_addr(full))
            await helping(stack, provider, [full])
            provider.relay_check.saw_stop(ID.from_base58(full.peer_id))
            assert await provider.relay_check.check(full.peer_id) == RETRY_S
            assert provider.relay_check.failed == 0 and full.relay_hop.refusals["circuits"] == 1


async def test_a_check_that_raises_does_not_end_the_checks() -> None:
    # The checks run in the node's nursery: an error escaping them would stop the node.
    calls: list[int] = []

    async def failing() -> None:
        calls.append(1)
        raise RuntimeError("a libp2p error nobody foresaw")

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            node = await start(stack)
            node.relay_check.check_due = failing  # type: ignore[method-assign]
            nursery.start_soon(node.relay_check.run, 0.01)
            await await_until(lambda: len(calls) >= 3)
            nursery.cancel_scope.cancel()
