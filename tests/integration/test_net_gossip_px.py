"""Attack 58: GossipSub peer exchange makes a node dial what a stranger names.

A PRUNE may carry "peer exchange" records: up to 16 peers, each with a signed peer record
of its addresses, and py-libp2p 0.8.1 connects to every one of them, from any peer,
for any topic, as often as PRUNEs come (its score thresholds default to -inf, so every
sender's PX is accepted). Keys are free and a record is signed by its own key, so any
peer could make a node dial any address, a third party's or one on the node's own LAN,
16 per PRUNE, one after another. p2pinfer finds peers through its bootstrap list, the
DHT and mDNS, and never sends PX itself, so it takes none (`build_gossipsub`:
`accept_px_threshold` +inf). Real hosts on loopback; the named address is a listener
that counts the connections it is offered and closes each at once (a dial fails fast,
so the next one comes)."""

from __future__ import annotations

import multiaddr
import pytest
import trio
import varint
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerstore import create_signed_peer_record
from libp2p.pubsub.pb import rpc_pb2

from p2pinfer.net.adverts import ADVERTS_TOPIC
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from tests.integration.net_helpers import config

pytestmark = pytest.mark.network


def prune_with_px(addr: multiaddr.Multiaddr, peers: int = 16) -> bytes:
    """A PRUNE of the adverts topic naming `peers` fresh keys, each at `addr`."""
    prune = rpc_pb2.ControlPrune(topicID=ADVERTS_TOPIC, backoff=1)
    for _ in range(peers):
        pair = create_new_key_pair()
        peer = ID.from_pubkey(pair.public_key)
        record = create_signed_peer_record(peer, [addr], pair.private_key)
        prune.peers.append(rpc_pb2.PeerInfo(peerID=peer.to_bytes(),
                                            signedPeerRecord=record.marshal_envelope()))
    raw = rpc_pb2.RPC(control=rpc_pb2.ControlMessage(prune=[prune])).SerializeToString()
    return varint.encode(len(raw)) + raw


async def test_peer_exchange_from_a_stranger_makes_the_node_dial_nothing() -> None:
    offered = 0

    async def count_and_close(stream: trio.SocketStream) -> None:
        nonlocal offered
        offered += 1
        await stream.aclose()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, \
                run_host(config(ip="127.0.0.2")) as target, run_host(config()) as attacker:
            listeners = await nursery.start(
                lambda task_status: trio.serve_tcp(count_and_close, 0, host="127.0.0.5",
                                                   task_status=task_status))
            port = listeners[0].socket.getsockname()[1]
            named = multiaddr.Multiaddr(f"/ip4/127.0.0.5/tcp/{port}")
            await attacker.connect(target.addrs()[0])
            await target.wait_for_mesh(attacker.peer_id, ADVERTS_TOPIC)
            stream = attacker._pubsub.peers[ID.from_base58(target.peer_id)]
            for _ in range(5):
                await stream.write(prune_with_px(named))
            await trio.sleep(3.0)
            assert await still_serving(target, attacker)
            nursery.cancel_scope.cancel()
    # 80 dials named by the attacker (5 PRUNEs of 16) on the old code.
    assert offered == 0


async def still_serving(target: NetHost, peer: NetHost) -> bool:
    """The attacker's PRUNEs cost it its mesh place, not its connection."""
    return peer.peer_id in target.peers()
