"""Attacks 34, 37 and 40: a few addresses squat every relay slot, or every circuit to a
provider (p2pinfer/net/relay.py); Sybil relays get a node's slots (net/relay_client.py).

A relay keeps 16 reservation slots, at most 4 per source address. Before this defence,
an attacker holding 4 IPv4 addresses (or one IPv6 host, whose /64 gives it as many
addresses as it likes) took all 16 at every relay of the network and held them with
idle connections: no provider behind NAT could reserve anywhere, so none could be
reached. Real hosts on 127.0.0.1; the address the relay attributes each peer to is set
by the test (`remote_ip`), since every peer here connects from 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AsyncExitStack

import pytest
import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID

from p2pinfer.errors import PeerUnreachableError
from p2pinfer.net import relay as relay_module
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.relay_rules import RelayClientConfig, RelayServiceConfig
from tests.integration.net_helpers import config
from tests.integration.test_net_relay_limits import (
    ECHO,
    MANUAL,
    echo,
    limits,
    relay_addr,
    start,
    through,
)
from tests.support.waiting import await_until

pytestmark = pytest.mark.network


@pytest.fixture
def addresses(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """peer id -> the IP address the relay sees that peer's connection come from."""
    table: dict[str, str] = {}

    def attributed(stream: INetStream) -> str | None:
        return table.get(stream.muxed_conn.peer_id.to_base58(), "127.0.0.1")

    monkeypatch.setattr(relay_module, "remote_ip", attributed)
    yield table


async def peer_at(stack: AsyncExitStack, table: dict[str, str], ip: str) -> NetHost:
    host = await start(stack)
    table[host.peer_id] = ip
    return host


async def test_two_attacker_addresses_cannot_keep_a_provider_from_a_full_relay(
        addresses: dict[str, str]) -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            relay = await start(stack, limits(max_reservations=4, max_reservations_per_ip=2))
            squatters = [await peer_at(stack, addresses, ip) for ip in
                         ("198.51.100.1", "198.51.100.1", "198.51.100.2", "198.51.100.2")]
            for s in squatters:
                assert await s.relay_client.reserve(relay_addr(relay))
            assert len(relay.relay_hop.reservations()) == 4

            provider = await peer_at(stack, addresses, "203.0.113.9")
            assert await provider.relay_client.reserve(relay_addr(relay))
            held = relay.relay_hop.reservations()
            assert provider.peer_id in held and len(held) == 4
            assert relay.relay_hop.refusals["evicted"] == 1
            evicted = next(s for s in squatters if s.peer_id not in held)

            # The squatters take turns: the evicted one asks again, a third address joins.
            assert not await evicted.relay_client.reserve(relay_addr(relay))
            third = await peer_at(stack, addresses, "198.51.100.3")
            assert await third.relay_client.reserve(relay_addr(relay))
            held = relay.relay_hop.reservations()
            assert provider.peer_id in held and third.peer_id in held
            # The provider's slot still carries its refresh.
            assert await provider.relay_client.reserve(relay_addr(relay))


async def test_a_holder_whose_slot_was_given_away_drops_its_circuit_address_soon(
        addresses: dict[str, str]) -> None:
    # Two providers behind one home NAT hold both slots; a newcomer from another address
    # gets one of theirs. The relay cannot tell the holder, so it learnt at its refresh,
    # near the slot's expiry: up to 9 minutes advertising a circuit nobody could use.
    # Now a slot is refreshed every `refresh_every_s` (120 s) whatever its expiry.
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            relay = await start(stack, limits(max_reservations=2, max_reservations_per_ip=2))
            home = [await peer_at(stack, addresses, "192.0.2.7") for _ in range(2)]
            for h in home:
                assert await h.relay_client.reserve(relay_addr(relay))
            newcomer = await peer_at(stack, addresses, "203.0.113.9")
            assert await newcomer.relay_client.reserve(relay_addr(relay))
            evicted = next(h for h in home if h.peer_id not in relay.relay_hop.reservations())
            assert evicted.relay_client.circuit_addrs()  # it does not know yet

            kept = next(h for h in home if h is not evicted)
            for h in home:  # as if refresh_every_s had passed since their reservations
                for slot in h.relay_client.slots.values():
                    slot.refreshed -= RelayClientConfig().refresh_every_s
                await h.relay_client.upkeep("private")
            assert evicted.relay_client.circuit_addrs() == []
            assert kept.relay_client.circuit_addrs() != []
            assert set(relay.relay_hop.reservations()) == {kept.peer_id, newcomer.peer_id}


async def test_one_ipv6_network_counts_as_one_address(addresses: dict[str, str]) -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            relay = await start(stack, limits(max_reservations=4, max_reservations_per_ip=2))
            squatters = [await peer_at(stack, addresses, f"2001:db8:0:{i}::{i + 1}")
                         for i in range(4)]  # four addresses of one /56
            results = [await s.relay_client.reserve(relay_addr(relay)) for s in squatters]
            assert results == [True, True, False, False]
            assert relay.relay_hop.refusals["reservations-per-ip"] == 2
            provider = await peer_at(stack, addresses, "2001:db8:1::5")  # another /56
            assert await provider.relay_client.reserve(relay_addr(relay))
            assert relay.relay_hop.refusals["evicted"] == 0


async def test_circuits_from_one_address_cannot_keep_a_consumer_from_a_provider(
        addresses: dict[str, str]) -> None:
    # Attack 37: a relay carries at most 8 circuits to one reserved peer, first come
    # first served, each held open up to 15 minutes: a few fresh keys holding
    # circuits to a provider behind NAT cut it off from every other consumer there.
    with trio.fail_after(90):
        async with AsyncExitStack() as stack:
            relay = await start(stack, limits(max_circuits_per_target=3))
            provider = await start(stack)
            provider.set_stream_handler(ECHO, echo)
            assert await provider.relay_client.reserve(relay_addr(relay))
            squatters = [await peer_at(stack, addresses, "198.51.100.1") for _ in range(3)]
            for s in squatters:
                await s.relay_client.dial(provider.peer_id, [through(relay, provider)])
            consumer = await peer_at(stack, addresses, "203.0.113.9")
            await consumer.relay_client.dial(provider.peer_id, [through(relay, provider)])
            stream = await consumer.open_stream(provider.peer_id, ECHO, first=b"\x02hi")
            assert await stream.read_frame(timeout_s=10) == b"hi"
            assert relay.relay_hop.refusals["circuit-evicted"] == 1
            with trio.fail_after(10):  # the oldest squatter's circuit was cut
                while squatters[0].peer_id in provider.peers():
                    await trio.sleep(0.1)
            # A squatter coming back cannot take the consumer's circuit back.
            with pytest.raises(PeerUnreachableError):
                await squatters[0].relay_client.dial(provider.peer_id,
                                                     [through(relay, provider)])
            assert consumer.peer_id in provider.peers()
            assert relay.relay_hop.refusals["circuits-per-target"] == 1


async def test_a_node_behind_nat_reserves_at_its_bootstrap_relay_before_strangers() -> None:
    # Attack 40: a node picking relays by itself took the connected relays whose
    # addresses sorted first, so relays run from low addresses (Sybils a DHT walk meets)
    # got every slot; these two accept slots and refuse every circuit.
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            blackholes = [await stack.enter_async_context(run_host(config(
                ip=f"127.0.0.{i}", autonat=MANUAL, relay_client=RelayClientConfig(auto=False),
                relay=limits(max_circuits=0)))) for i in (2, 3)]
            honest = await stack.enter_async_context(run_host(config(
                ip="127.0.0.4", autonat=MANUAL, relay_client=RelayClientConfig(auto=False),
                relay=limits())))
            node = await stack.enter_async_context(run_host(config(
                autonat=MANUAL, relay=RelayServiceConfig(mode="off"),
                bootstrap=(relay_addr(honest),))))
            for b in blackholes:
                await node.connect(relay_addr(b))
            store = node._host.get_peerstore()
            relays = [ID.from_base58(r.peer_id) for r in (*blackholes, honest)]
            await await_until(lambda: all(
                p in node._host.get_connected_peers()
                and store.supports_protocols(p, [HOP_PROTOCOL_ID]) for p in relays))
            await node.relay_client.upkeep("private")
            assert honest.peer_id in node.relay_client.slots
            assert len(node.relay_client.slots) == 2
