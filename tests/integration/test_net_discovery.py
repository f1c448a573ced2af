"""How nodes find each other: bootstrap addresses (retried) and mDNS on the local network."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest
import trio

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from tests.integration.net_helpers import config

pytestmark = pytest.mark.network


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until_connected(net: NetHost, peer_id: str) -> None:
    while peer_id not in net.peers():
        await trio.sleep(0.05)


async def test_bootstrap_peer_that_starts_late_is_dialled_again() -> None:
    boot_id = NodeIdentity.generate()
    port = free_port()
    boot_addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{boot_id.peer_id}"
    with trio.fail_after(30):
        async with run_host(config(bootstrap=(boot_addr,), bootstrap_interval_s=0.2)) as node:
            assert node.peers() == []
            boot_cfg = replace(config(boot_id), listen_addrs=(f"/ip4/127.0.0.1/tcp/{port}",))
            async with run_host(boot_cfg) as boot:
                await until_connected(node, boot.peer_id)


async def test_a_bootstrap_peer_that_starts_seconds_late_is_met_within_seconds() -> None:
    # Nodes started together (a testnet, a compose file) come up in any order: a failed
    # bootstrap dial is retried after 1 s, then 2, 4, ... not only every 30 s (the
    # default interval, kept here).
    boot_id = NodeIdentity.generate()
    port = free_port()
    boot_addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{boot_id.peer_id}"
    with trio.fail_after(20):
        async with run_host(config(bootstrap=(boot_addr,))) as node:
            assert config().bootstrap_interval_s == 30.0
            await trio.sleep(1.5)  # the first dial and the first retry fail
            assert node.peers() == []
            boot_cfg = replace(config(boot_id), listen_addrs=(f"/ip4/127.0.0.1/tcp/{port}",))
            async with run_host(boot_cfg) as boot:
                await until_connected(node, boot.peer_id)


async def test_mdns_connects_nodes_without_any_address_given() -> None:
    with trio.fail_after(30):
        async with (
            run_host(config(ip="0.0.0.0", enable_mdns=True)) as a,
            run_host(config(ip="0.0.0.0", enable_mdns=True)) as b,
        ):
            await until_connected(b, a.peer_id)
            await until_connected(a, b.peer_id)


async def test_a_node_with_few_peers_meets_those_who_joined_its_bootstrap_after_it() -> None:
    # A joined through B before C did: A's first walk found no one but B. With few
    # connections A walks again soon (`few_peers_refresh_s`), not at its next provide
    # interval (10 min), and so meets C: a second peer for AutoNAT, a relay to use. A is
    # behind NAT (it announces an address nothing listens on), so C's own walk, which
    # B answers with A, cannot be what connects them.
    behind_nat = {"announce_addrs": ("/ip4/127.0.0.1/tcp/1",), "few_peers_refresh_s": 0.5}
    with trio.fail_after(60):
        async with run_host(config()) as bootstrap:
            boot = (f"{bootstrap.addrs()[0]}/p2p/{bootstrap.peer_id}",)
            async with run_host(config(bootstrap=boot, **behind_nat)) as early:
                await until_connected(early, bootstrap.peer_id)
                await early.refresh_routing_table()  # its first walk: B alone
                async with run_host(config(bootstrap=boot)) as late:
                    await until_connected(bootstrap, late.peer_id)
                    await until_connected(early, late.peer_id)
