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


async def test_mdns_connects_nodes_without_any_address_given() -> None:
    with trio.fail_after(30):
        async with (
            run_host(config(ip="0.0.0.0", enable_mdns=True)) as a,
            run_host(config(ip="0.0.0.0", enable_mdns=True)) as b,
        ):
            await until_connected(b, a.peer_id)
            await until_connected(a, b.peer_id)
