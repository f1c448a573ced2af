"""GossipSub: an IWANT naming one cached message 10,000 times is answered 10,000 times.

**Defect (py-libp2p 0.8.1).** `libp2p/pubsub/gossipsub.py`, `GossipSub.handle_iwant`,
looks up every message id an IWANT lists, duplicates included, and sends every cached
message it finds, however often the same peer asked for it before. One fresh key that
heard an advert (any subscriber does) sent a 940 KB IWANT naming it 10,000 times: the
node built and queued a 16.7 MB answer in 0.13 s of its event loop; ten such IWANTs a
second (libp2p's rate limit) would cost it more than a core and 167 MB/s of upload.
go-libp2p-pubsub answers a peer's IWANT for a message at most 3 times
(`GossipSubGossipRetransmission`) and reads at most 5,000 ids from one message
(`GossipSubMaxIHaveLength`).

**What we do.** `install()` wraps `GossipSub.handle_iwant`: an IWANT's ids are taken
once each, at most `MAX_IDS` (5,000) of them, and an id this peer already asked for
`RETRANSMISSIONS` (3) times is dropped; libp2p's own handler answers the rest. The
counts are kept per peer for the 1,024 peers heard from last, each forgotten past
20,000 ids (messages leave the cache within seconds).

**To drop it.** When py-libp2p limits IWANT retransmissions, delete this module; the
guard test (tests/unit/net/compat/test_iwant_bounds.py) checks the defect and the canary.

**Upstream.** Not reported.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any

from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2

from p2pinfer.bounded import first_distinct, keep_latest
from p2pinfer.net.compat import _canary

PATCHED = {"libp2p.pubsub.gossipsub:GossipSub.handle_iwant": "cae61a447ac52c39"}
ORIGINAL = GossipSub.handle_iwant
ORIGINALS = {"libp2p.pubsub.gossipsub:GossipSub.handle_iwant": ORIGINAL}
_canary.remember(ORIGINALS)
UPSTREAM = None

RETRANSMISSIONS = 3
MAX_IDS = 5000
MAX_PEERS = 1024
MAX_IDS_KEPT = 20_000
_SENT_ATTR = "p2pinfer_iwant_sent"


def _asked(router: Any, peer: Any) -> Counter[bytes]:
    """How often `peer` asked for each message id (for the peers heard from last)."""
    table: OrderedDict[Any, Counter[bytes]] = vars(router).setdefault(_SENT_ATTR,
                                                                      OrderedDict())
    counts = table.get(peer)
    if counts is None or len(counts) > MAX_IDS_KEPT:
        counts = Counter()
    keep_latest(table, peer, counts, MAX_PEERS)
    return counts


def wanted_ids(ids: Any, asked: Counter[bytes]) -> list[bytes]:
    """The ids of an IWANT worth answering: each once, at most MAX_IDS, none this peer
    already asked for RETRANSMISSIONS times; counts them as asked."""
    wanted = first_distinct((wire for wire in ids if asked[wire] < RETRANSMISSIONS), MAX_IDS)
    for wire in wanted:
        asked[wire] += 1
    return wanted


async def handle_iwant(self: GossipSub, iwant_msg: rpc_pb2.ControlIWant,
                       sender_peer_id: Any) -> None:
    wanted = wanted_ids(iwant_msg.messageIDs, _asked(self, sender_peer_id))
    if not wanted:
        return
    if len(wanted) < len(iwant_msg.messageIDs):
        iwant_msg = rpc_pb2.ControlIWant(messageIDs=wanted)
    await ORIGINAL(self, iwant_msg, sender_peer_id)


def install() -> None:
    """Wrap `GossipSub.handle_iwant` (idempotent)."""
    GossipSub.handle_iwant = handle_iwant  # type: ignore[method-assign]


__all__ = ["MAX_IDS", "RETRANSMISSIONS", "install", "wanted_ids"]
