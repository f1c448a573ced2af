"""KadDHT's protocol id: stock py-libp2p 0.8.1 ignores `protocol_prefix` and serves
`/ipfs/kad/1.0.0`; `build_dht` serves only ours. Two hosts on the wire:
tests/integration/test_net_kad_protocol.py."""

from __future__ import annotations

from libp2p import new_host
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.common import PROTOCOL_ID as IPFS_KAD
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.compat import kad_protocol
from p2pinfer.net.compat.kad_protocol import DHT_PROTOCOL_ID, build_dht
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p


def served(host: object) -> set[str]:
    return {str(p) for p in host.get_mux().handlers}  # type: ignore[attr-defined]


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(kad_protocol)


def test_defect_stock_kad_dht_ignores_its_protocol_prefix() -> None:
    # If this fails, upstream honours the prefix: build KadDHT with it, drop the views.
    host = new_host()
    KadDHT(host, DHTMode.SERVER, protocol_prefix=TProtocol("/p2pinfer"))
    assert str(IPFS_KAD) in served(host)
    assert DHT_PROTOCOL_ID not in served(host)


def test_build_dht_serves_our_protocol_only() -> None:
    host = new_host()
    build_dht(host)
    assert DHT_PROTOCOL_ID in served(host)
    assert str(IPFS_KAD) not in served(host)


def test_peers_are_seen_as_dht_servers_only_if_they_speak_our_protocol() -> None:
    host = new_host()
    dht = build_dht(host)
    ours, ipfs = (ID.from_base58(NodeIdentity.generate().peer_id) for _ in range(2))
    store = host.get_peerstore()
    store.add_protocols(ours, [DHT_PROTOCOL_ID])
    store.add_protocols(ipfs, [str(IPFS_KAD)])
    view = dht.host.get_peerstore()
    assert str(IPFS_KAD) in view.get_protocols(ours)
    assert str(IPFS_KAD) not in view.get_protocols(ipfs)
