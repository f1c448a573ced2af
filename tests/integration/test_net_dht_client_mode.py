"""A node AutoNAT finds private is a DHT client (go-libp2p's ModeAuto): it stops serving
our Kademlia protocol and stays out of other nodes' routing tables, so their answers
do not send DHT walks to dial it, yet it still announces and finds provider records
through the servers. Real hosts on 127.0.0.1; the routing-table rule itself:
tests/unit/net/compat/test_kad_server_peers.py."""

from __future__ import annotations

import pytest
import trio

from p2pinfer.net.compat.kad_protocol import DHT_PROTOCOL_ID
from p2pinfer.net.dht import follow_reachability
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.reachability import ReachabilityWatch
from tests.integration.net_helpers import config
from tests.support.waiting import await_until

pytestmark = pytest.mark.network

MODEL = "smollm2:135m"


def serves_dht(net: NetHost) -> bool:
    return DHT_PROTOCOL_ID in {str(p) for p in net._host.get_mux().handlers}


def in_table(net: NetHost, peer_id: str) -> bool:
    return peer_id in {p.to_base58() for p in net._dht.routing_table.get_peer_ids()}


async def test_a_private_node_is_a_dht_client_that_still_provides_and_finds() -> None:
    status = ReachabilityWatch("private")
    with trio.fail_after(40):
        async with (
            run_host(config()) as server,
            run_host(config()) as natted,
            run_host(config()) as other,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(lambda: follow_reachability(
                natted._dht, status, interval_s=0.1))
            await await_until(lambda: not serves_dht(natted), timeout_s=5)
            assert natted.records.dht_mode == "client" and server.records.dht_mode == "server"
            for node in (natted, other):
                await node.connect(server.addrs()[0])
                await node.refresh_routing_table()
            natted_id = natted._host.get_id()
            await await_until(lambda: server._dht.serves_dht(natted_id) is False)
            await await_until(lambda: in_table(server, other.peer_id))
            await server.refresh_routing_table()
            await other.refresh_routing_table()

            # Nobody's table holds the client, so no walk is sent to dial it...
            assert not in_table(server, natted.peer_id)
            assert not in_table(other, natted.peer_id)
            # ...and it still announces and looks up through the server's table.
            await natted.provide(MODEL)
            assert [r.peer_id for r in await other.find_providers(MODEL)] == [natted.peer_id]
            await other.provide("gemma3:270m")
            assert [r.peer_id for r in await natted.find_providers("gemma3:270m")] == [
                other.peer_id]

            # Public again: it serves the DHT, and a server admits it on its next query.
            status.set("public")
            await await_until(lambda: serves_dht(natted), timeout_s=5)
            await await_until(lambda: server._dht.serves_dht(natted_id) is True)
            await natted.refresh_routing_table()
            await await_until(lambda: in_table(server, natted.peer_id), timeout_s=5)
            nursery.cancel_scope.cancel()


async def test_unknown_reachability_leaves_a_node_a_server() -> None:
    with trio.fail_after(20):
        async with run_host(config()) as node, trio.open_nursery() as nursery:
            nursery.start_soon(lambda: follow_reachability(
                node._dht, ReachabilityWatch(), interval_s=0.05))
            await trio.sleep(0.3)
            assert serves_dht(node) and node._dht.server
            nursery.cancel_scope.cancel()


async def test_the_dht_mode_follows_a_new_verdict_at_once() -> None:
    """With the default 5 s prune beat: the mode switches when AutoNAT's verdict changes,
    not at the next beat (the follower read the verdict every 5 s)."""
    watch = ReachabilityWatch("public")
    with trio.fail_after(20):
        async with run_host(config()) as node, trio.open_nursery() as nursery:
            nursery.start_soon(follow_reachability, node._dht, watch)
            await await_until(lambda: serves_dht(node), timeout_s=5)
            await trio.sleep(0.1)  # the follower waits for the next change
            watch.set("private")
            await await_until(lambda: not serves_dht(node), timeout_s=0.5)
            watch.set("public")
            await await_until(lambda: serves_dht(node), timeout_s=0.5)
            nursery.cancel_scope.cancel()
