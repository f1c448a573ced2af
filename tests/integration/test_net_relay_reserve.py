"""A node behind NAT reserves a slot at a relay and tells others its circuit address
(p2pinfer/net/relay_client.py), on real hosts on 127.0.0.1. "Behind NAT" is simulated by
announcing an address nothing listens on: AutoNAT's dial-backs fail, so it is private."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import replace

import pytest
import trio

from p2pinfer.errors import PeerTimeoutError
from p2pinfer.identity import NodeIdentity
from p2pinfer.net.adverts import verify_advert
from p2pinfer.net.autonat_rules import AutoNatConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.relay_client import MAX_LIMITED_REMEMBERED
from p2pinfer.net.relay_rules import (
    RelayClientConfig,
    RelayServiceConfig,
    circuit_addr,
    is_circuit_addr,
    path_of,
)
from tests.integration.net_helpers import advert_template, config, hold_silently
from tests.integration.test_net_relay_limits import ECHO, echo

pytestmark = pytest.mark.network

MANUAL = AutoNatConfig(confirmations=1, first_delay_s=3600.0)
QUICK = RelayClientConfig(auto=False, check_interval_s=0.3, refresh_margin_s=2.0)
UNREACHABLE = ("/ip4/127.0.0.1/tcp/1",)  # nothing listens: direct dials are refused


async def relay_node(stack: AsyncExitStack, **limits: int) -> NetHost:
    relay = replace(RelayServiceConfig(mode="on"), **limits)
    return await stack.enter_async_context(run_host(config(autonat=MANUAL, relay=relay)))


async def wait_for_slots(net: NetHost, count: int, timeout_s: float = 10.0) -> None:
    with trio.fail_after(timeout_s):
        while len(net.relay_client.slots) != count:
            await trio.sleep(0.1)


async def test_a_node_told_a_relay_advertises_its_circuit_address_signed_and_in_the_dht() -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            relay = await relay_node(stack)
            provider = await stack.enter_async_context(run_host(config(
                autonat=MANUAL, announce_addrs=UNREACHABLE, bootstrap=(relay.addrs()[0],),
                relay_client=replace(QUICK, reserve=(relay.addrs()[0],)))))
            await wait_for_slots(provider, 1)
            through = circuit_addr(relay.addrs()[0], relay.peer_id, provider.peer_id)
            assert provider.relay_client.circuit_addrs() == [through]
            assert relay.relay_hop.reservations() == [provider.peer_id]

            signed = verify_advert(provider.sign_advert(advert_template()))
            assert through in signed.advert.listen_addrs
            assert signed.signer == provider.peer_id
            await provider.publish_advert(provider.sign_advert(advert_template()))

            consumer = await stack.enter_async_context(run_host(config(
                autonat=MANUAL, bootstrap=(relay.addrs()[0],))))
            with trio.fail_after(20):
                while True:
                    refs = await consumer.find_providers("smollm2:135m")
                    addrs = [a for r in refs if r.peer_id == provider.peer_id for a in r.addrs]
                    if any(is_circuit_addr(a) for a in addrs):
                        break
                    await trio.sleep(0.5)
            assert any(relay.peer_id in a for a in addrs if is_circuit_addr(a))


async def test_a_private_node_reserves_at_a_connected_relay_by_itself() -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            relay = await relay_node(stack)
            plain = await stack.enter_async_context(run_host(config(
                autonat=MANUAL, relay=RelayServiceConfig(mode="off"))))
            quick_nat = AutoNatConfig(confirmations=1, first_delay_s=0.3, unknown_interval_s=1.0)
            provider = await stack.enter_async_context(run_host(config(
                autonat=quick_nat, announce_addrs=UNREACHABLE,
                bootstrap=(plain.addrs()[0], relay.addrs()[0]),
                relay_client=replace(QUICK, auto=True))))
            with trio.fail_after(20):
                while provider.reachability != "private":
                    await trio.sleep(0.1)
            await wait_for_slots(provider, 1)
            assert list(provider.relay_client.slots) == [relay.peer_id]  # not the non-relay
            assert relay.relay_hop.reservations() == [provider.peer_id]


async def test_a_node_reserves_as_soon_as_it_learns_it_is_private() -> None:
    # Upkeep runs every check_interval_s (5 s by default), and at once on a new verdict.
    auto = RelayClientConfig(auto=True)
    assert auto.check_interval_s == 5.0
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            relay = await relay_node(stack)
            provider = await stack.enter_async_context(run_host(config(
                autonat=MANUAL, announce_addrs=UNREACHABLE, bootstrap=(relay.addrs()[0],),
                relay_client=auto)))
            while relay.peer_id not in provider.peers():
                await trio.sleep(0.05)
            await trio.sleep(0.5)  # its first upkeep, while unknown, is over
            assert await provider.autonat.check_once() == "private"
            await wait_for_slots(provider, 1, timeout_s=2.5)


async def test_a_reachable_node_takes_no_slot_by_itself() -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            relay = await relay_node(stack)
            quick_nat = AutoNatConfig(confirmations=1, first_delay_s=0.3, unknown_interval_s=1.0)
            node = await stack.enter_async_context(run_host(config(
                autonat=quick_nat, bootstrap=(relay.addrs()[0],),
                relay_client=replace(QUICK, auto=True))))
            with trio.fail_after(20):
                while node.reachability != "public":
                    await trio.sleep(0.1)
            await trio.sleep(1.0)
            assert node.relay_client.slots == {}
            assert relay.relay_hop.reservations() == []


async def test_the_slot_is_refreshed_before_it_expires() -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            relay = await relay_node(stack, reservation_ttl_s=3)
            provider = await stack.enter_async_context(run_host(config(
                autonat=MANUAL, relay_client=replace(QUICK, reserve=(relay.addrs()[0],)))))
            await wait_for_slots(provider, 1)
            first = provider.relay_client.slots[relay.peer_id].expires
            await trio.sleep(5.0)  # past the first expiry
            assert provider.relay_client.slots[relay.peer_id].expires > first
            assert relay.relay_hop.reservations() == [provider.peer_id]


async def stoppable_relay(scope: trio.CancelScope, *,
                          task_status: trio.TaskStatus[NetHost] = trio.TASK_STATUS_IGNORED,
                          ) -> None:
    """A relay node in its own task, stopped (its process gone) by cancelling `scope`."""
    with scope:
        async with AsyncExitStack() as stack:
            task_status.started(await relay_node(stack))
            await trio.sleep_forever()


async def test_the_circuit_address_goes_when_the_relay_goes() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            relay_scope = trio.CancelScope()
            relay = await nursery.start(stoppable_relay, relay_scope)
            provider = await stack.enter_async_context(run_host(config(
                autonat=MANUAL, relay_client=replace(QUICK, reserve=(relay.addrs()[0],)))))
            await wait_for_slots(provider, 1)
            relay_scope.cancel()
            await wait_for_slots(provider, 0)
            assert provider.relay_client.circuit_addrs() == []
            assert not any(is_circuit_addr(a) for a in provider.addrs())
            signed = verify_advert(provider.sign_advert(advert_template()))
            assert not any(is_circuit_addr(a) for a in signed.advert.listen_addrs)


async def test_a_node_holds_at_most_max_relays_slots() -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            relays = [await relay_node(stack) for _ in range(3)]
            provider = await stack.enter_async_context(run_host(config(
                autonat=MANUAL, relay_client=replace(
                    QUICK, max_relays=2, reserve=tuple(r.addrs()[0] for r in relays)))))
            await wait_for_slots(provider, 2)
            await trio.sleep(1.0)
            assert len(provider.relay_client.slots) == 2
            assert len(provider.relay_client.circuit_addrs()) == 2


async def test_a_direct_dial_that_hangs_falls_back_to_the_relay_in_seconds() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            await nursery.start(hold_silently, listeners)
            silent = f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}"
            relay = await relay_node(stack)
            target = await stack.enter_async_context(run_host(config(
                autonat=MANUAL, announce_addrs=(silent,),
                relay_client=replace(QUICK, reserve=(relay.addrs()[0],)))))
            target.set_stream_handler(ECHO, echo)
            await wait_for_slots(target, 1)
            caller = await stack.enter_async_context(run_host(config(autonat=MANUAL)))
            caller.add_peer_addrs(target.peer_id, (silent, *target.relay_client.circuit_addrs()))
            started = trio.current_time()
            stream = await caller.open_stream(target.peer_id, ECHO, first=b"\x02hi")
            took = trio.current_time() - started
            assert await stream.read_frame(timeout_s=5) == b"hi"
            assert path_of(stream.transport_addrs()) == "relayed"
            # direct_first_s (3 s) for the silent address, not the 10 s dial timeout
            assert 2.5 < took < 6.0
            await stream.close()
            nursery.cancel_scope.cancel()


async def test_a_new_slot_is_advertised_at_once_not_at_the_next_republish() -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            relay = await relay_node(stack)
            consumer = await stack.enter_async_context(run_host(config(
                autonat=MANUAL, bootstrap=(relay.addrs()[0],))))
            provider = await stack.enter_async_context(run_host(config(
                autonat=MANUAL, bootstrap=(relay.addrs()[0],), relay_client=QUICK)))
            provider.start_advertising(advert_template, interval_s=600.0)
            with trio.fail_after(10):
                await consumer.catalog.wait_for(
                    lambda c: c.advert_of(provider.peer_id) is not None)
            assert await provider.relay_client.reserve(relay.addrs()[0])
            with trio.fail_after(5):  # the republish interval is 10 min
                while True:
                    entry = consumer.catalog.advert_of(provider.peer_id)
                    assert entry is not None
                    if any(is_circuit_addr(a) for a in entry.advert.listen_addrs):
                        break
                    await trio.sleep(0.1)


async def test_the_callers_timeout_bounds_the_direct_and_the_relayed_try_together() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            await nursery.start(hold_silently, listeners)
            silent = f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}"
            relay_listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            await nursery.start(hold_silently, relay_listeners)  # a relay that never answers
            mute = (f"/ip4/127.0.0.1/tcp/{relay_listeners[0].socket.getsockname()[1]}"
                    f"/p2p/{NodeIdentity.generate().peer_id}")
            target = NodeIdentity.generate().peer_id
            caller = await stack.enter_async_context(run_host(config(autonat=MANUAL)))
            caller.add_peer_addrs(target, (silent, f"{mute}/p2p-circuit/p2p/{target}"))
            started = trio.current_time()
            with pytest.raises(PeerTimeoutError):
                await caller.open_stream(target, ECHO, timeout_s=2.0)
            assert trio.current_time() - started < 3.0  # not 2 s + the relay's 10 s
            nursery.cancel_scope.cancel()


async def test_a_swarm_of_limited_relays_is_remembered_only_so_far() -> None:
    # Every relay found too limited for jobs is remembered (not asked again): a Sybil
    # swarm of them must not grow that memory without end.
    with trio.fail_after(30):
        async with run_host(config()) as net:
            for i in range(MAX_LIMITED_REMEMBERED + 44):
                net.relay_client.remember_limited(f"relay-{i}", (131072, 120))
            net.relay_client.remember_limited("relay-50", (1, 1))  # again: now the newest
            limited = net.relay_client.limited
            assert len(limited) == MAX_LIMITED_REMEMBERED
            assert "relay-0" not in limited and list(limited)[-1] == "relay-50"
