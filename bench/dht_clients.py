"""DHT walks and NATed peers: what a lookup pays when routing tables hold peers that cannot
be dialled. Writes bench/results/dht_clients.json.

    python bench/dht_clients.py [--clients 8] [--rounds 3]

One process, real hosts on 127.0.0.1. A DHT server S; `--clients` nodes in client mode
(as a node AutoNAT finds private runs) connect to S and query it, then "go behind their
NAT": their hosts close and S's peerstore holds, for each, the address a NAT would have
given it, which here is a mute TCP listener (accepts, never answers: a dial hangs as one
to a NAT dropping unsolicited packets does, until the dialer gives up). A provider P
announces a model through S. Then a fresh node T, knowing only S, looks the model up
(`NetHost.find_providers`: the walk and S's own answer) and is timed; the mute listener
counts the connections T's walk opens to the vanished clients (knocks). Run twice: S on
stock py-libp2p 0.8.1's KadDHT (every querier joins its table) and S on ours
(`ServerPeersKadDHT`: only DHT servers do). Each round uses a fresh T (py-libp2p keeps a
failed peer in a negative cache for 60 s, which would hide the cost from a second lookup).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.peer.id import ID

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import machine, results_path, utc_now, write_result  # noqa: E402
from p2pinfer.net.compat.kad_server_peers import ServerPeersKadDHT  # noqa: E402
from p2pinfer.net.host import run_host  # noqa: E402
from tests.integration.net_helpers import config, kad_server, mute_addr  # noqa: E402

RESULTS = results_path("dht_clients.json")
MODEL = "smollm2:135m"


async def natted_clients(server: KadDHT, count: int, mute: multiaddr.Multiaddr) -> list[str]:
    """`count` client-mode nodes that queried `server` and are gone; the server's
    peerstore holds `mute` for each (their NAT's mapping)."""
    ids = []
    addr = str(server.host.get_addrs()[0])
    for _ in range(count):
        async with run_host(config()) as client:
            await client._dht.set_server(False)
            await client.connect(addr)
            await client.refresh_routing_table()
            ids.append(client.peer_id)
    await trio.sleep(1.0)  # deferred admissions (ours) are decided
    store = server.host.get_peerstore()
    for peer in ids:
        pid = ID.from_base58(peer)
        store.clear_addrs(pid)
        store.add_addrs(pid, [mute], 3600)
    return ids


async def one_setup(cls: type[KadDHT], clients: int, rounds: int) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        mute = await stack.enter_async_context(mute_addr())
        server = await stack.enter_async_context(kad_server(cls))
        addr = str(server.host.get_addrs()[0])
        provider = await stack.enter_async_context(run_host(config()))
        await provider.connect(addr)
        await provider.refresh_routing_table()
        ids = await natted_clients(server, clients, mute.addr)
        table = {p.to_base58() for p in server.routing_table.get_peer_ids()}
        await provider.provide(MODEL)
        times, found, knocked = [], [], []
        for _ in range(rounds):
            async with run_host(config()) as looker:
                await looker.connect(addr)
                before = mute.accepted
                started = time.perf_counter()
                refs = await looker.find_providers(MODEL)
                times.append(round((time.perf_counter() - started) * 1000, 1))
                found.append([r.peer_id for r in refs] == [provider.peer_id])
                knocked.append(mute.accepted - before)
        return {"clients_in_server_table": len(table & set(ids)),
                "lookup_ms": times, "lookup_ms_median": statistics.median(times),
                "found_the_provider": found, "knocks_on_natted_clients": knocked}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result: dict[str, Any] = {"date": utc_now(), "machine": machine(),
                              "clients": args.clients, "rounds": args.rounds}
    for name, cls in (("stock_kad_dht", KadDHT), ("server_peers_kad_dht", ServerPeersKadDHT)):
        print(name, file=sys.stderr)
        result[name] = trio.run(one_setup, cls, args.clients, args.rounds)
    write_result(RESULTS, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
