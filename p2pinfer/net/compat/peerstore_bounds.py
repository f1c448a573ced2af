"""PeerStore: a peer's addresses and protocols are kept however many it names.

**Defect (py-libp2p 0.8.1).** `libp2p/peer/peerdata.py`, `PeerData.add_addrs`, checks
each new address against a list of the peer's addresses (quadratic), and
`libp2p/peer/peerstore.py`, `PeerStore.consume_peer_record`, adds every address of a
signed peer record a peer sends about itself (in identify and identify push, DHT
answers, pubsub RPCs), with no bound; `PeerStore.add_protocols` keeps every protocol
string identify names. A fresh key's identify push carrying a record it signed with
20,000 addresses (240 KB) stalled the node's event loop for 10.8 s (a 1 MiB push, ~85,000
addresses, would stall it for minutes); a push naming 80,000 protocols (880 KB) left
~7 MB in the peerstore after the peer left, for each fresh key, up to the peerstore's
1,000 peers.

**What we do.** `install()` wraps three `PeerStore` methods. `consume_peer_record`
refuses a record with more than `MAX_ADDRS` (64) addresses (ours carry a handful).
`add_addrs` adds at most `MAX_ADDRS` distinct addresses at once and keeps a peer's
newest `MAX_ADDRS` (the oldest go first), so the quadratic check stays small.
`add_protocols` / `set_protocols` keep at most `MAX_PROTOCOLS` (256) protocol ids of at
most `MAX_PROTOCOL_CHARS` (256) each.

**To drop it.** When py-libp2p bounds what a peer can make its peerstore hold, delete
this module; the guard test (tests/unit/net/compat/test_peerstore_bounds.py) checks the
defect and the canary.

**Upstream.** Not reported.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from libp2p.peer.peerstore import PeerStore

from p2pinfer.bounded import first_distinct
from p2pinfer.net.compat import _canary

log = logging.getLogger(__name__)

PATCHED = {
    "libp2p.peer.peerstore:PeerStore.add_addrs": "0983713217b06c43",
    "libp2p.peer.peerstore:PeerStore.consume_peer_record": "35e869e7ba6df92b",
    "libp2p.peer.peerstore:PeerStore.add_protocols": "9aa12684396ead57",
    "libp2p.peer.peerstore:PeerStore.set_protocols": "5f448d3be90e21fc",
    "libp2p.peer.peerdata:PeerData.add_addrs": "22e6e512da6d6b03",
}
ORIGINAL_ADD_ADDRS = PeerStore.add_addrs
ORIGINAL_CONSUME = PeerStore.consume_peer_record
ORIGINAL_ADD_PROTOCOLS = PeerStore.add_protocols
ORIGINAL_SET_PROTOCOLS = PeerStore.set_protocols
ORIGINALS = {
    "libp2p.peer.peerstore:PeerStore.add_addrs": ORIGINAL_ADD_ADDRS,
    "libp2p.peer.peerstore:PeerStore.consume_peer_record": ORIGINAL_CONSUME,
    "libp2p.peer.peerstore:PeerStore.add_protocols": ORIGINAL_ADD_PROTOCOLS,
    "libp2p.peer.peerstore:PeerStore.set_protocols": ORIGINAL_SET_PROTOCOLS,
}
_canary.remember(ORIGINALS)
UPSTREAM = None

MAX_ADDRS = 64
MAX_PROTOCOLS = 256
MAX_PROTOCOL_CHARS = 256


def add_addrs(self: PeerStore, peer_id: Any, addrs: Sequence[Any], ttl: int = 0) -> None:
    ORIGINAL_ADD_ADDRS(self, peer_id, first_distinct(addrs, MAX_ADDRS), ttl)
    data = self.peer_data_map.get(peer_id)
    if data is not None and len(data.addrs) > MAX_ADDRS:
        data.addrs = data.addrs[-MAX_ADDRS:]


def consume_peer_record(self: PeerStore, envelope: Any, ttl: int) -> bool:
    try:
        count = len(envelope.record().addrs)
    except Exception:  # a record that does not parse: libp2p refuses it too
        return False
    if count > MAX_ADDRS:
        log.debug("peer record refused: %d addresses (at most %d)", count, MAX_ADDRS)
        return False
    return bool(ORIGINAL_CONSUME(self, envelope, ttl))


def _protocols(protocols: Sequence[str], room: int) -> list[str]:
    kept = [p for p in protocols if isinstance(p, str) and len(p) <= MAX_PROTOCOL_CHARS]
    return kept[:max(0, room)]


def add_protocols(self: PeerStore, peer_id: Any, protocols: Sequence[str]) -> None:
    data = self.peer_data_map.get(peer_id)
    held = len(data.protocols) if data is not None else 0
    ORIGINAL_ADD_PROTOCOLS(self, peer_id, _protocols(protocols, MAX_PROTOCOLS - held))


def set_protocols(self: PeerStore, peer_id: Any, protocols: Sequence[str]) -> None:
    ORIGINAL_SET_PROTOCOLS(self, peer_id, _protocols(protocols, MAX_PROTOCOLS))


def install() -> None:
    """Wrap the four `PeerStore` methods (idempotent)."""
    PeerStore.add_addrs = add_addrs  # type: ignore[method-assign]
    PeerStore.consume_peer_record = consume_peer_record  # type: ignore[method-assign]
    PeerStore.add_protocols = add_protocols  # type: ignore[method-assign]
    PeerStore.set_protocols = set_protocols  # type: ignore[method-assign]


__all__ = ["MAX_ADDRS", "MAX_PROTOCOLS", "install"]
