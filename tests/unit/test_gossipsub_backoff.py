"""GossipSub mesh upkeep: a peer our heartbeat prunes is not grafted again before the
backoff its PRUNE announced (p2pinfer/net/libp2p_tuning.py, prune_with_backoff)."""

from __future__ import annotations

from types import SimpleNamespace

from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, GossipSub

from p2pinfer.identity import NodeIdentity
from p2pinfer.net import libp2p_tuning

TOPIC = "p2pinfer/adverts/1"


def router(peers: list[ID]) -> GossipSub:
    libp2p_tuning.install()
    gs = GossipSub([PROTOCOL_ID], degree=2, degree_low=1, degree_high=3,
                   adaptive_gossip_enabled=False)
    gs.pubsub = SimpleNamespace(peer_topics={TOPIC: set(peers)})  # type: ignore[assignment]
    for peer in peers:
        gs.peer_protocol[peer] = PROTOCOL_ID
    return gs


def test_pruned_peers_are_backed_off_and_not_grafted_again_at_once() -> None:
    peers = [ID.from_base58(NodeIdentity.generate().peer_id) for _ in range(6)]
    gs = router(peers)
    gs.mesh[TOPIC] = set(peers[:5])  # over degree_high: the heartbeat prunes down to 2
    _, to_prune = gs.mesh_heartbeat()
    pruned = {p for p, topics in to_prune.items() if TOPIC in topics}
    assert len(pruned) == 3
    assert all(gs._check_back_off(p, TOPIC) for p in pruned)
    gs.mesh[TOPIC] = set()  # the mesh empties: the next heartbeat grafts degree peers
    to_graft, _ = gs.mesh_heartbeat()
    grafted = {p for p, topics in to_graft.items() if TOPIC in topics}
    assert len(grafted) == 2 and not grafted & pruned
