"""Pubsub: the sender's signed peer record verified on every RPC.

**Defect (py-libp2p 0.8.1).** `libp2p/pubsub/utils.py`, `maybe_consume_signed_record`,
called by `Pubsub.continuously_read_stream` and `GossipSub.handle_rpc` (imported by name
into `libp2p.pubsub.pubsub`, `.gossipsub` and `.floodsub`) for every RPC received: each
RPC carries the sender's signed peer record (added by libp2p/py-libp2p#889), and each
one is decoded, its Ed25519 signature verified and the peer's addresses rewritten in the
peerstore, twice for RPCs with control messages, although it is almost always the same
record as the last one.

**What we do.** `consume_sender_record_once` verifies a record once: the same bytes from
the same peer, while the peerstore still holds that record (same payload and signature),
are accepted without verifying again (re-done every `SENDER_RECORD_REFRESH_S` to renew
the addresses' TTL). A different or invalid record goes through py-libp2p's own check,
as before. `install()` rebinds the name in the pubsub and gossipsub modules (floodsub is
not used here).

**To drop it.** When upstream skips re-verifying an unchanged record (e.g. compares
against `peerstore.get_peer_record` before `consume_envelope`), delete this module and
its `install` call.

**Upstream.** The per-RPC record came with libp2p/py-libp2p#889
(https://github.com/libp2p/py-libp2p/pull/889, tracking issue #791); no issue about its
cost was found. Drafted patch: docs/upstream/pubsub-sender-record-once.diff.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import libp2p.pubsub.gossipsub as _gossipsub_module
import libp2p.pubsub.pubsub as _pubsub_module
from libp2p.abc import IHost, IPeerStore
from libp2p.peer.envelope import Envelope
from libp2p.peer.id import ID
from libp2p.peer.peerstore import PeerStoreError
from libp2p.pubsub import utils as _pubsub_utils
from libp2p.pubsub.pb.rpc_pb2 import RPC

PATCHED = {"libp2p.pubsub.utils:maybe_consume_signed_record": "11b2181c27d75df4"}
UPSTREAM = "https://github.com/libp2p/py-libp2p/pull/889"
DRAFT = "docs/upstream/pubsub-sender-record-once.diff"

SENDER_RECORD_REFRESH_S = 600.0
"""A cached sender record is verified and stored again after this long (its addresses'
TTL in the peerstore is 2 h)."""

SENDER_RECORD_CACHE_PEERS = 4096
"""Peers remembered per host; the cache is emptied when it grows past this."""

ORIGINAL: Callable[[RPC, IHost, ID], bool] = _pubsub_utils.maybe_consume_signed_record
ORIGINALS = {"libp2p.pubsub.utils:maybe_consume_signed_record": ORIGINAL}
NAME = "maybe_consume_signed_record"
CALLERS = (_pubsub_module, _gossipsub_module)  # the modules whose RPC readers call it


@dataclass
class _AcceptedRecord:
    raw: bytes
    payload: bytes
    signature: bytes
    verified_at: float

    def still_stored(self, envelope: Envelope | None) -> bool:
        """Whether `envelope` (the peerstore's, maybe re-read by identify or the DHT) is this
        record: same payload, same signature."""
        return (
            envelope is not None
            and envelope.raw_payload == self.payload
            and envelope.signature == self.signature
        )


_accepted: weakref.WeakKeyDictionary[IPeerStore, dict[ID, _AcceptedRecord]] = (
    weakref.WeakKeyDictionary()
)


def _stored_record(peerstore: IPeerStore, peer_id: ID) -> Envelope | None:
    """`peerstore.get_peer_record(peer_id)`, or None where py-libp2p raises instead (its
    cleanup reads the peer's addresses, which raises once their TTL ran out: "peer ID is
    expired"). Unguarded, that error left a gossip stream handler and stopped the node."""
    try:
        return peerstore.get_peer_record(peer_id)
    except PeerStoreError:
        return None


def consume_sender_record_once(msg: RPC, host: IHost, peer_id: ID | None = None) -> bool:
    """`maybe_consume_signed_record`, verifying each distinct record of a peer once.

    Same contract as py-libp2p's: True if the RPC carries no record or a valid
    one of `peer_id` (now stored), False otherwise.
    """
    if peer_id is None or not msg.HasField("senderRecord"):
        return ORIGINAL(msg, host, peer_id)  # type: ignore[arg-type]  # as py-libp2p calls it
    raw = msg.senderRecord
    peerstore = host.get_peerstore()
    per_peer = _accepted.setdefault(peerstore, {})
    now = time.monotonic()
    known = per_peer.get(peer_id)
    if (
        known is not None
        and known.raw == raw
        and now - known.verified_at < SENDER_RECORD_REFRESH_S
        and known.still_stored(_stored_record(peerstore, peer_id))
    ):
        return True
    if not ORIGINAL(msg, host, peer_id):
        per_peer.pop(peer_id, None)
        return False
    envelope = _stored_record(peerstore, peer_id)
    if envelope is not None:
        if len(per_peer) >= SENDER_RECORD_CACHE_PEERS:
            per_peer.clear()
        per_peer[peer_id] = _AcceptedRecord(
            bytes(raw), bytes(envelope.raw_payload), bytes(envelope.signature), now
        )
    return True


def install() -> None:
    """Rebind `maybe_consume_signed_record` where pubsub's RPC readers look it up (idempotent)."""
    for module in CALLERS:
        setattr(module, NAME, consume_sender_record_once)
