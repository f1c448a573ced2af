"""GossipSub: no backoff recorded for the peers the heartbeat prunes.

**Defect (py-libp2p 0.8.1).** `libp2p/pubsub/gossipsub.py`, `GossipSub.mesh_heartbeat`:
when a mesh grows past D_high it PRUNEs the extras (and the PRUNE it sends announces a
backoff), but unlike go-libp2p-pubsub (`makePrune` calls `addBackoff`) it records no
backoff for them. A heartbeat later, the mesh short again, it may GRAFT the same peer;
that peer recorded the PRUNE and calls the GRAFT a flood: it PRUNEs back and lowers our
score ("GRAFT flood detected ... applying penalty", seen at 50 nodes, docs/scaling.md).

**What we do.** `prune_with_backoff` wraps `mesh_heartbeat` and records, for every peer
and topic it prunes, the backoff its PRUNE announces (`_add_back_off(peer, topic,
False)`), so the next GRAFT goes to another peer. `install()` replaces the method.

**To drop it.** When upstream's `mesh_heartbeat` (or the PRUNE it emits) calls
`_add_back_off` for pruned peers, delete this module and its `install` call.

**Upstream.** No py-libp2p issue found; go-libp2p-pubsub's behaviour:
https://github.com/libp2p/go-libp2p-pubsub/issues/286. Drafted patch:
docs/upstream/gossipsub-heartbeat-prune-backoff.diff.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub

PATCHED = {
    "libp2p.pubsub.gossipsub:GossipSub.mesh_heartbeat": "57f36f0ee54dd461",
    "libp2p.pubsub.gossipsub:GossipSub._add_back_off": "72076b56bb3004a0",
}
UPSTREAM = "https://github.com/libp2p/go-libp2p-pubsub/issues/286"
DRAFT = "docs/upstream/gossipsub-heartbeat-prune-backoff.diff"

Heartbeat = tuple[defaultdict[ID, list[str]], defaultdict[ID, list[str]]]
ORIGINAL: Callable[[GossipSub], Heartbeat] = GossipSub.mesh_heartbeat
ORIGINALS = {"libp2p.pubsub.gossipsub:GossipSub.mesh_heartbeat": ORIGINAL}


def prune_with_backoff(self: GossipSub) -> Heartbeat:
    """`GossipSub.mesh_heartbeat`, recording a backoff for every peer it prunes (as the
    PRUNE it sends announces), so that a later heartbeat does not GRAFT it again early."""
    to_graft, to_prune = ORIGINAL(self)
    for peer, topics in to_prune.items():
        for topic in topics:
            self._add_back_off(peer, topic, False)
    return to_graft, to_prune


def install() -> None:
    """Replace `GossipSub.mesh_heartbeat` (idempotent)."""
    GossipSub.mesh_heartbeat = prune_with_backoff  # type: ignore[method-assign]
