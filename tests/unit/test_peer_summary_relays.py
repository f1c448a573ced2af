"""`p2pinfer peers` names the relays a peer behind NAT is reached through, from the
circuit addresses in its signed advert."""

from __future__ import annotations

from p2pinfer.node.session import PeerSummary, relay_of

RELAY_1 = "12D3KooWRelay1111111111111111111111111111111111111"
RELAY_2 = "12D3KooWRelay2222222222222222222222222222222222222"
PEER = "12D3KooWPeerPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPP"


def test_relays_come_from_circuit_addresses_only_once_each_in_order() -> None:
    addrs = (
        "/ip4/10.0.0.5/tcp/4001",
        f"/ip4/1.2.3.4/tcp/4001/p2p/{RELAY_2}/p2p-circuit/p2p/{PEER}",
        f"/dns4/relay.example/tcp/4001/p2p/{RELAY_1}/p2p-circuit",
        f"/ip4/1.2.3.4/tcp/4002/p2p/{RELAY_2}/p2p-circuit/p2p/{PEER}",
    )
    peer = PeerSummary(PEER, addrs, (), "", 0, 0, None)
    assert peer.relays == (RELAY_2, RELAY_1)
    assert relay_of(addrs[1]) == RELAY_2


def test_a_peer_with_direct_addresses_only_has_no_relay() -> None:
    assert PeerSummary(PEER, ("/ip4/10.0.0.5/tcp/4001",), (), "", 0, 0, None).relays == ()
