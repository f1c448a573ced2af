"""Transport security is Noise only; a peer offering plaintext is never spoken to."""

from __future__ import annotations

import socket
from dataclasses import replace

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

from p2pinfer.errors import NetworkError, PeerUnreachableError, UsageError
from p2pinfer.net.host import run_host
from tests.integration.net_helpers import config

pytestmark = pytest.mark.network


async def test_plaintext_only_peer_cannot_connect_either_way() -> None:
    with trio.fail_after(30):
        async with run_host(config()) as node:
            kp = create_new_key_pair()
            plain = new_host(key_pair=kp, sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(kp)})
            async with plain.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                with pytest.raises(Exception, match="unable to connect"):
                    await plain.connect(info_from_p2p_addr(multiaddr.Multiaddr(node.addrs()[0])))
                with pytest.raises(PeerUnreachableError):
                    await node.connect(str(plain.get_addrs()[0]))
                assert node.peers() == []


async def test_connections_use_noise_and_yamux() -> None:
    with trio.fail_after(30):
        async with run_host(config()) as a, run_host(config()) as b:
            await a.connect(b.addrs()[0])
            [conn] = a._host.get_network().connections[b._host.get_id()]
            assert conn.get_negotiated_security_protocol() == "/noise"
            assert conn.get_negotiated_muxer_protocol() == "/yamux/1.0.0"


@pytest.mark.parametrize(
    "listen",
    ["/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0/ws", "not an address"],
)
async def test_non_tcp_listen_address_is_a_usage_error(listen: str) -> None:
    with pytest.raises(UsageError):
        async with run_host(replace(config(), listen_addrs=(listen,))):
            pass


async def test_bootstrap_address_without_peer_id_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="/p2p/"):
        async with run_host(config(bootstrap=("/ip4/127.0.0.1/tcp/4001",))):
            pass


async def test_port_in_use_is_a_network_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        cfg = replace(config(), listen_addrs=(f"/ip4/127.0.0.1/tcp/{port}",))
        with trio.fail_after(30), pytest.raises(NetworkError):
            async with run_host(cfg):
                pass
