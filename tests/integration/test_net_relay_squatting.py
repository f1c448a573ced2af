"""Attack 34: a few addresses squat every relay slot (p2pinfer/net/relay.py).

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

from p2pinfer.net import relay as relay_module
from p2pinfer.net.nethost import NetHost
from tests.integration.test_net_relay_limits import limits, relay_addr, start

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
