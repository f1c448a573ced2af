"""GossipSub mesh upkeep: stock py-libp2p 0.8.1 prunes without recording a backoff; with
the workaround a peer our heartbeat prunes is not grafted again before the backoff its
PRUNE announced (p2pinfer/net/compat/prune_backoff.py)."""

from __future__ import annotations

from types import SimpleNamespace

from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, GossipSub

from p2pinfer.identity import NodeIdentity
from p2pinfer.net import compat
from p2pinfer.net.compat import prune_backoff
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

TOPIC = "p2pinfer/adverts/1"


def router(peers: list[ID]) -> GossipSub:
    gs = GossipSub([PROTOCOL_ID], degree=2, degree_low=1, degree_high=3,
                   adaptive_gossip_enabled=False)
    gs.pubsub = SimpleNamespace(peer_topics={TOPIC: set(peers)})  # type: ignore[assignment]
    for peer in peers:
        gs.peer_protocol[peer] = PROTOCOL_ID
    return gs


def peers(n: int) -> list[ID]:
    return [ID.from_base58(NodeIdentity.generate().peer_id) for _ in range(n)]


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(prune_backoff)


def test_defect_stock_libp2p_prunes_without_a_backoff() -> None:
    # If this fails, upstream records the backoff itself: drop the workaround.
    gs = router(peers(6))
    gs.mesh[TOPIC] = set(list(gs.peer_protocol)[:5])
    _, to_prune = prune_backoff.ORIGINAL(gs)
    pruned = [p for p, topics in to_prune.items() if TOPIC in topics]
    assert pruned and not any(gs._check_back_off(p, TOPIC) for p in pruned)


def test_pruned_peers_are_backed_off_and_not_grafted_again_at_once() -> None:
    compat.install()
    all_peers = peers(6)
    gs = router(all_peers)
    gs.mesh[TOPIC] = set(all_peers[:5])  # over degree_high: the heartbeat prunes down to 2
    _, to_prune = gs.mesh_heartbeat()
    pruned = {p for p, topics in to_prune.items() if TOPIC in topics}
    assert len(pruned) == 3
    assert all(gs._check_back_off(p, TOPIC) for p in pruned)
    gs.mesh[TOPIC] = set()  # the mesh empties: the next heartbeat grafts degree peers
    to_graft, _ = gs.mesh_heartbeat()
    grafted = {p for p, topics in to_graft.items() if TOPIC in topics}
    assert len(grafted) == 2 and not grafted & pruned


def test_install_is_idempotent() -> None:
    compat.install()
    compat.install()
    assert GossipSub.mesh_heartbeat is prune_backoff.prune_with_backoff
