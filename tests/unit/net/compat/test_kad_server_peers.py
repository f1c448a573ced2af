"""Who enters a DHT routing table: stock py-libp2p 0.8.1 admits every peer that sends
it a Kademlia query, a client-mode one too; `ServerPeersKadDHT` admits only peers that
identify says serve our DHT. Real hosts on 127.0.0.1; behaviour on full nodes:
tests/integration/test_net_dht_client_mode.py."""

from __future__ import annotations

import pytest
import trio
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.compat import kad_server_peers
from p2pinfer.net.compat.kad_protocol import DHT_PROTOCOL_ID, KadHostView
from p2pinfer.net.compat.kad_server_peers import IDENTIFY, ServerPeersKadDHT
from p2pinfer.net.host import build_libp2p_host, run_host
from tests.integration.net_helpers import config, kad_server
from tests.support.waiting import await_until
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

pytestmark = pytest.mark.network


def in_table(dht: KadDHT, peer_id: str) -> bool:
    return peer_id in {p.to_base58() for p in dht.routing_table.get_peer_ids()}


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(kad_server_peers)


async def test_defect_stock_kad_dht_admits_a_client_that_queries_it() -> None:
    # If this fails, upstream checks an inbound querier's protocols: drop the subclass.
    with trio.fail_after(30):
        async with kad_server(KadDHT) as server, run_host(config()) as client:
            await client._dht.set_server(False)  # client mode: our DHT not served
            await client.connect(str(server.host.get_addrs()[0]))
            await client.refresh_routing_table()  # a query to the server
            protocols = server.host.get_peerstore().get_protocols
            await await_until(lambda: IDENTIFY in protocols(client._host.get_id()))
            assert DHT_PROTOCOL_ID not in protocols(client._host.get_id())  # no DHT there
            assert in_table(server, client.peer_id)


async def test_a_client_that_queries_stays_out_of_our_table_and_a_server_gets_in() -> None:
    with trio.fail_after(30):
        async with (
            kad_server(ServerPeersKadDHT) as server,
            run_host(config()) as client,
            run_host(config()) as peer,
        ):
            await client._dht.set_server(False)
            for node in (client, peer):
                await node.connect(str(server.host.get_addrs()[0]))
                await node.refresh_routing_table()
            assert isinstance(server, ServerPeersKadDHT)
            await await_until(lambda: in_table(server, peer.peer_id))  # maybe deferred
            await await_until(lambda: server.serves_dht(client._host.get_id()) is False)
            await trio.sleep(2 * kad_server_peers.POLL_S)  # a deferred check has run
            assert not in_table(server, client.peer_id)


async def test_set_server_keeps_the_table_and_prune_drops_peers_that_turned_client() -> None:
    with trio.fail_after(30):
        async with kad_server(ServerPeersKadDHT) as server, run_host(config()) as node:
            await node.connect(str(server.host.get_addrs()[0]))
            await node.refresh_routing_table()
            await await_until(lambda: in_table(server, node.peer_id))
            assert in_table(node._dht, server.host.get_id().to_base58())

            assert await node._dht.set_server(False)
            assert not await node._dht.set_server(False)  # no change, nothing pushed
            assert DHT_PROTOCOL_ID not in {str(p) for p in node._host.get_mux().handlers}
            # Its own table is kept (py-libp2p's switch_mode would empty it).
            assert in_table(node._dht, server.host.get_id().to_base58())
            assert isinstance(server, ServerPeersKadDHT)
            await await_until(lambda: server.serves_dht(node._host.get_id()) is False)
            assert [p.to_base58() for p in server.prune_clients()] == [node.peer_id]
            assert not in_table(server, node.peer_id)

            assert await node._dht.set_server(True)
            assert DHT_PROTOCOL_ID in {str(p) for p in node._host.get_mux().handlers}


def test_a_peer_serves_the_dht_only_as_identify_says() -> None:
    host = build_libp2p_host(config())
    dht = ServerPeersKadDHT(KadHostView(host, DHT_PROTOCOL_ID), DHTMode.SERVER)
    store = host.get_peerstore()
    unknown, pinged, server, client = (
        ID.from_base58(NodeIdentity.generate().peer_id) for _ in range(4))
    store.add_protocols(pinged, ["/ipfs/ping/1.0.0"])  # a stream's, before identify's list
    store.add_protocols(server, [IDENTIFY, DHT_PROTOCOL_ID])
    store.add_protocols(client, [IDENTIFY, "/ipfs/ping/1.0.0"])
    assert [dht.serves_dht(p) for p in (unknown, pinged, server, client)] == [
        None, None, True, False]
