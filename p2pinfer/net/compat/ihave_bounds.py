"""GossipSub: an IHAVE for any topic, with any number of ids, is asked for in full.

**Defect (py-libp2p 0.8.1).** `libp2p/pubsub/gossipsub.py`, `GossipSub.handle_ihave`,
rate-limits IHAVEs per peer *and topic* (10 a second), keeps that rate's state for
every topic name a peer makes up, and answers with an IWANT for every unseen id listed,
for topics the node never joined too. One fresh key sending 50 IHAVEs of 10,000 made-up
ids on 50 made-up topics: 0.4 s of the node's event loop, 24 MB of IWANTs back, rate
state for 50 topics; with a new topic name each time, no rate limit applies at all.
go-libp2p-pubsub ignores IHAVEs for topics it has no mesh in, reads at most 5,000 ids
from one (`GossipSubMaxIHaveLength`) and asks a peer for at most 5,000 ids per heartbeat.

**What we do.** `install()` wraps `GossipSub.handle_ihave`: an IHAVE for a topic the
node has no mesh in is dropped before libp2p sees it (so no per-topic state either); the
rest are read once per id, at most `MAX_IDS` (5,000), and a peer gets IWANTs for at
most `MAX_IDS` ids in any 1 s window (our heartbeat).

**To drop it.** When py-libp2p ignores IHAVEs for topics outside its mesh and bounds the
ids it asks for, delete this module; the guard test
(tests/unit/net/compat/test_ihave_bounds.py) checks the defect and the canary.

**Upstream.** Not reported.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2

from p2pinfer.bounded import first_distinct, keep_latest
from p2pinfer.net.compat import _canary

PATCHED = {"libp2p.pubsub.gossipsub:GossipSub.handle_ihave": "f6e76650441d182b"}
ORIGINAL = GossipSub.handle_ihave
ORIGINALS = {"libp2p.pubsub.gossipsub:GossipSub.handle_ihave": ORIGINAL}
_canary.remember(ORIGINALS)
UPSTREAM = None

MAX_IDS = 5000
WINDOW_S = 1.0
MAX_PEERS = 1024
_ASKED_ATTR = "p2pinfer_ihave_asked"


def _budget_left(router: Any, peer: Any, now: float) -> tuple[list[Any], int]:
    """The peer's (window start, ids asked) record and how many ids it may still get."""
    table: OrderedDict[Any, list[Any]] = vars(router).setdefault(_ASKED_ATTR, OrderedDict())
    entry = table.get(peer)
    if entry is None or now - entry[0] >= WINDOW_S:
        entry = [now, 0]
    keep_latest(table, peer, entry, MAX_PEERS)
    return entry, MAX_IDS - entry[1]


async def handle_ihave(self: GossipSub, ihave_msg: rpc_pb2.ControlIHave,
                       sender_peer_id: Any) -> None:
    if ihave_msg.topicID not in self.mesh:
        return
    entry, left = _budget_left(self, sender_peer_id, time.monotonic())
    if left <= 0:
        return
    ids = first_distinct(ihave_msg.messageIDs, min(left, MAX_IDS))
    entry[1] += len(ids)
    if len(ids) < len(ihave_msg.messageIDs):
        ihave_msg = rpc_pb2.ControlIHave(topicID=ihave_msg.topicID, messageIDs=ids)
    await ORIGINAL(self, ihave_msg, sender_peer_id)


def install() -> None:
    """Wrap `GossipSub.handle_ihave` (idempotent)."""
    GossipSub.handle_ihave = handle_ihave  # type: ignore[method-assign]


__all__ = ["MAX_IDS", "install"]
