"""Attack: what a peer says about itself, kept however big.

py-libp2p 0.8.1 adds every address of a peer's signed record (checking each against a
list: quadratic; 20,000 addresses stalled a node's loop for 10.8 s) and keeps every
protocol id identify names (80,000 of them: ~7 MB per fresh key). Real p2pinfer hosts
on 127.0.0.1 for the push; the peerstore itself for the rest.
"""

from __future__ import annotations

import pytest
import trio
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.identity.identify_push.identify_push import ID_PUSH
from libp2p.peer.envelope import Envelope, seal_record
from libp2p.peer.id import ID
from libp2p.peer.peer_record import PeerRecord, timestamp_seq
from libp2p.peer.peerstore import PeerStore
from libp2p.utils import varint
from multiaddr import Multiaddr

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.compat import peerstore_bounds
from p2pinfer.net.compat.peerstore_bounds import MAX_ADDRS, MAX_PROTOCOLS
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from tests.support.waiting import await_until
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

pytestmark = pytest.mark.network


def addrs(count: int, first: int = 0) -> list[Multiaddr]:
    return [Multiaddr(f"/ip4/10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/tcp/"
                      f"{1 + i % 60000}") for i in range(first, first + count)]


def sealed(identity: NodeIdentity, count: int) -> Envelope:
    peer = ID.from_base58(identity.peer_id)
    record = PeerRecord(peer, addrs(count), timestamp_seq())
    return seal_record(record, identity.libp2p_key_pair().private_key)


class StockPeerStore(PeerStore):
    """py-libp2p's own methods, whether or not `install()` ran in this process."""

    add_addrs = peerstore_bounds.ORIGINAL_ADD_ADDRS
    consume_peer_record = peerstore_bounds.ORIGINAL_CONSUME
    add_protocols = peerstore_bounds.ORIGINAL_ADD_PROTOCOLS


def test_defect_a_signed_record_s_addresses_and_identify_s_protocols_are_all_kept() -> None:
    identity = NodeIdentity.generate()
    store = StockPeerStore()
    assert store.consume_peer_record(sealed(identity, 500), 7200)
    peer = ID.from_base58(identity.peer_id)
    assert len(store.addrs(peer)) == 500
    store.add_protocols(peer, [f"/p/{n}" for n in range(5000)])
    assert len(store.get_protocols(peer)) == 5000


async def test_an_identify_push_with_a_20000_address_record_is_refused() -> None:
    """Stock: the node's loop stalled 10.8 s adding them (measured; docs/security.md)."""
    attacker_id = NodeIdentity.generate()
    with trio.fail_after(60):
        async with run_host(NetConfig(NodeIdentity.generate())) as target, \
                run_host(NetConfig(attacker_id)) as attacker:
            await attacker.connect(next(a for a in target.addrs() if "/tcp/" in a))
            peer = ID.from_base58(attacker.peer_id)
            store = target._host.get_peerstore()
            msg = Identify()
            msg.signedPeerRecord = sealed(attacker_id, 20_000).marshal_envelope()
            msg.protocols.extend(f"/made/up/{n}" for n in range(5000))
            msg.protocols.append("/x" * 200)
            raw = msg.SerializeToString()
            stream = await attacker._host.new_stream(ID.from_base58(target.peer_id), [ID_PUSH])
            await stream.write(varint.encode_uvarint(len(raw)) + raw)
            await await_until(lambda: "/made/up/0" in store.get_protocols(peer))
            assert len(store.get_protocols(peer)) == MAX_PROTOCOLS
            assert "/x" * 200 not in store.get_protocols(peer)
            assert len(store.addrs(peer)) <= MAX_ADDRS
            assert store.get_peer_record(peer) is None or \
                len(store.get_peer_record(peer).record().addrs) <= MAX_ADDRS


def test_a_peer_keeps_its_newest_64_addresses() -> None:
    store = PeerStore()
    peer = ID.from_base58(NodeIdentity.generate().peer_id)
    store.add_addrs(peer, addrs(1000), 7200)
    assert store.addrs(peer) == addrs(MAX_ADDRS)  # at most 64 taken from one call
    for n in range(100):
        store.add_addr(peer, addrs(1, 5000 + n)[0], 7200)
    assert store.addrs(peer) == addrs(MAX_ADDRS, 5000 + 100 - MAX_ADDRS)
    assert store.consume_peer_record(sealed(NodeIdentity.generate(), MAX_ADDRS), 7200)


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(peerstore_bounds)
