"""GossipSub: GRAFTs and PRUNEs for any topic name, each answered or kept.

**Defect (py-libp2p 0.8.1).** `libp2p/pubsub/gossipsub.py`, `GossipSub.handle_graft`
answers a GRAFT for a topic the node never joined with a PRUNE (an RPC carrying our
signed peer record), and a GRAFT during backoff, or too soon after a PRUNE, with another,
every time; `GossipSub.handle_prune` stores backoff and flood-tracking state for any
topic name. One RPC of 20,000 GRAFTs on made-up topics (320 KB) made 20,000 PRUNEs,
~6 CPU-s in one process (attack 59, docs/security.md); PRUNEs with fresh names grow
two tables without bound. go-libp2p-pubsub ignores GRAFTs and PRUNEs for topics it has
no mesh in ("spam hardening") and answers a peer's GRAFTs of one RPC with one RPC.

**What we do.** `install()` wraps both: a GRAFT or PRUNE for a topic the node has no
mesh in is dropped before libp2p sees it; of a peer's GRAFTs on one topic, one a second
reaches libp2p (an honest peer grafts once, then after a backoff of a minute).

**To drop it.** When py-libp2p ignores control messages for topics outside its mesh
and answers repeated GRAFTs once, delete this module; the guard test
(tests/unit/net/compat/test_graft_prune_bounds.py) checks the defect and the canary.

**Upstream.** Not reported.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2

from p2pinfer.bounded import keep_latest
from p2pinfer.net.compat import _canary

PATCHED = {
    "libp2p.pubsub.gossipsub:GossipSub.handle_graft": "12206b0c497aaccd",
    "libp2p.pubsub.gossipsub:GossipSub.handle_prune": "c61235b1862b7fab",
}
ORIGINAL_GRAFT = GossipSub.handle_graft
ORIGINAL_PRUNE = GossipSub.handle_prune
ORIGINALS = {
    "libp2p.pubsub.gossipsub:GossipSub.handle_graft": ORIGINAL_GRAFT,
    "libp2p.pubsub.gossipsub:GossipSub.handle_prune": ORIGINAL_PRUNE,
}
_canary.remember(ORIGINALS)
UPSTREAM = None

GRAFT_EVERY_S = 1.0  # a peer's GRAFTs on one topic reach libp2p once per this
MAX_GRAFTERS = 1024  # (peer, topic) pairs remembered, the least recent forgotten
_GRAFTED_ATTR = "p2pinfer_grafted"


async def handle_graft(self: GossipSub, graft_msg: rpc_pb2.ControlGraft,
                       sender_peer_id: Any) -> None:
    topic = graft_msg.topicID
    if topic not in self.mesh:
        return
    table: OrderedDict[Any, float] = vars(self).setdefault(_GRAFTED_ATTR, OrderedDict())
    now, last = time.monotonic(), table.get((sender_peer_id, topic))
    if last is not None and now - last < GRAFT_EVERY_S:
        return
    keep_latest(table, (sender_peer_id, topic), now, MAX_GRAFTERS)
    await ORIGINAL_GRAFT(self, graft_msg, sender_peer_id)


async def handle_prune(self: GossipSub, prune_msg: rpc_pb2.ControlPrune,
                       sender_peer_id: Any) -> None:
    if prune_msg.topicID not in self.mesh:
        return
    await ORIGINAL_PRUNE(self, prune_msg, sender_peer_id)


def install() -> None:
    """Wrap `GossipSub.handle_graft` and `handle_prune` (idempotent)."""
    GossipSub.handle_graft = handle_graft  # type: ignore[method-assign]
    GossipSub.handle_prune = handle_prune  # type: ignore[method-assign]


__all__ = ["install"]
