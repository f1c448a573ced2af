"""Our DHT speaks Kademlia as `/p2pinfer/kad/1.0.0`: two of our nodes exchange provider
records, and a stock py-libp2p Kademlia node (the public `/ipfs/kad/1.0.0`) and ours
neither store records on each other nor enter each other's routing tables."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from libp2p.host.exceptions import StreamFailure
from libp2p.kad_dht.common import PROTOCOL_ID as IPFS_KAD
from libp2p.peer.id import ID

from p2pinfer.errors import ProtocolNotSupportedError
from p2pinfer.net.compat.kad_protocol import DHT_PROTOCOL_ID
from p2pinfer.net.dht import model_key, model_key_bytes
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from tests.integration.net_helpers import config, kad_server

pytestmark = pytest.mark.network

MODEL = "smollm2:135m"


def served(net: NetHost) -> set[str]:
    return {str(p) for p in net._host.get_mux().get_protocols()}


def routing_peers(dht: Any) -> set[str]:
    return {p.to_base58() for p in dht.routing_table.get_peer_ids()}


async def test_two_of_our_nodes_exchange_provider_records_over_p2pinfer_kad() -> None:
    with trio.fail_after(30):
        async with run_host(config()) as a, run_host(config()) as b:
            assert DHT_PROTOCOL_ID in served(a) and IPFS_KAD not in served(a)
            await b.connect(a.addrs()[0])
            await a.refresh_routing_table()
            await b.refresh_routing_table()
            assert a.peer_id in routing_peers(b._dht)
            await a.provide(MODEL)
            assert [ref.peer_id for ref in await b.find_providers(MODEL)] == [a.peer_id]


async def test_a_stock_ipfs_kad_node_and_ours_exchange_no_dht_records() -> None:
    with trio.fail_after(40):
        async with run_host(config()) as ours, kad_server(protocol=str(IPFS_KAD)) as stock:
            stock_id = stock.host.get_id().to_base58()
            await ours.connect(str(stock.host.get_addrs()[0]))
            await trio.sleep(0.5)  # identify has told each side the other's protocols
            await ours.refresh_routing_table()
            with trio.move_on_after(10):
                await stock.refresh_routing_table()

            # Neither routing table admits the other, and neither side serves the
            # other's Kademlia protocol.
            assert stock_id not in routing_peers(ours._dht)
            assert ours.peer_id not in routing_peers(stock)
            with pytest.raises(ProtocolNotSupportedError):
                await ours.open_stream(stock_id, DHT_PROTOCOL_ID, first=b"\x00")
            with pytest.raises(StreamFailure):  # as any IPFS peer would try
                await stock.host.new_stream(ID.from_base58(ours.peer_id), [IPFS_KAD])

            # Records provided on each side stay there.
            await ours.provide(MODEL)
            with trio.move_on_after(10):
                await stock.provide(model_key(MODEL))
            assert await ours.find_providers(MODEL) == []
            with trio.move_on_after(10):
                found = await stock.find_providers(model_key(MODEL))
            assert ours.peer_id not in {p.peer_id.to_base58() for p in found}
            assert stock_id not in {
                p.peer_id.to_base58()
                for p in ours._dht.provider_store.get_providers(model_key_bytes(MODEL))
            }

