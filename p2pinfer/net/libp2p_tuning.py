"""py-libp2p 0.8.1 behaviours that made an idle node pay per message, and our changes.

Profiling idle nodes of a testnet (docs/scaling.md) showed most of their CPU
in py-libp2p's per-message work, multiplied by three of its defaults:

- **Yamux credit on every read.** `YamuxStream` sends a WINDOW_UPDATE frame
  after *every* read (its `PY_YAMUX_RELEASE_ON_READ` default, and a "partial
  slack" branch that fires even without it). Pubsub and our framing read a
  varint length one byte at a time, so each gossip RPC received made the
  receiver send 2-3 encrypted window-update frames back, and the sender decrypt
  and parse them. `install` restores go-yamux's rule: grant credit once at
  least half the receive window has been consumed. Flow control is unchanged
  (the sender may never have more than the window in flight); only the number
  of update frames falls.
- **The sender's signed peer record on every RPC.** py-libp2p attaches its
  signed peer record to each gossip RPC and every receiver verifies its
  Ed25519 signature and rewrites the peer's addresses in the peerstore, twice
  for RPCs with control messages. `consume_sender_record_once` verifies a
  record once: the same bytes from the same peer, while the peerstore still
  holds that record (same payload and signature), are accepted without
  verifying again (re-done every `SENDER_RECORD_REFRESH_S` to renew the
  addresses' TTL). A different or invalid record goes through py-libp2p's own
  check, as before.
- **A walk of the whole task tree per message.** `memoize_task_parents`.

One more is a protocol fix rather than a cost:

- **No backoff for the peers its heartbeat prunes.** When a mesh grows past
  D_high, GossipSub's heartbeat PRUNEs the extras but, unlike go-libp2p-pubsub
  (which adds a backoff in `makePrune`), records no backoff for them, so a
  heartbeat later, the mesh short again, it may GRAFT the same peer. That peer
  recorded the PRUNE and calls the GRAFT a flood: it PRUNEs back and lowers our
  score ("GRAFT flood detected ... applying penalty", seen at 50 nodes).
  `prune_with_backoff` records the backoff the PRUNE announces, so the next
  GRAFT goes to another peer.

`install()` (idempotent, called by `run_host`) replaces one method of
`YamuxStream`, the module-level `maybe_consume_signed_record` that
py-libp2p's pubsub and gossipsub modules call, and `GossipSub.mesh_heartbeat`;
`run_host` applies `memoize_task_parents` to its Pubsub's manager. libp2p is pinned
(pyproject.toml), and tests/integration/test_net_upkeep.py fails if an upgrade
moves any of them.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libp2p.pubsub.gossipsub as _gossipsub_module
import libp2p.pubsub.pubsub as _pubsub_module
from libp2p.pubsub import utils as _pubsub_utils
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.stream_muxer.yamux.yamux import YamuxStream

SENDER_RECORD_REFRESH_S = 600.0
"""A cached sender record is verified and stored again after this long (its addresses'
TTL in the peerstore is 2 h)."""

SENDER_RECORD_CACHE_PEERS = 4096
"""Peers remembered per host; the cache is emptied when it grows past this."""

_original_consume: Callable[..., bool] = _pubsub_utils.maybe_consume_signed_record
_CONSUME = "maybe_consume_signed_record"
_CALLERS = (_pubsub_module, _gossipsub_module)  # the modules whose RPC readers call it


# -- Yamux ------------------------------------------------------------------------------


async def _grant_credit_when_half_consumed(self: Any, *, bytes_read: int = 0) -> None:
    """go-yamux's `sendWindowUpdate`: no update until half the window is consumed."""
    del bytes_read  # the window arithmetic below already counts what was read
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        consumed = self.target_recv_window - (self.recv_window + buffered)
        if consumed <= 0 or consumed < self.target_recv_window // 2:
            return
        increment = self._grow_to_delta(buffered) + self._apply_autotune_epoch(buffered)
        self._pending_recv_release = 0
    # Never hold window_lock across the write (py-libp2p's own rule).
    await self.send_window_update(increment, skip_lock=True)


# -- signed sender records ------------------------------------------------------------------


@dataclass
class _AcceptedRecord:
    raw: bytes
    payload: bytes
    signature: bytes
    verified_at: float

    def still_stored(self, envelope: Any) -> bool:
        """Whether `envelope` (the peerstore's, maybe re-read by identify or the DHT) is this
        record: same payload, same signature."""
        return (
            envelope is not None
            and envelope.raw_payload == self.payload
            and envelope.signature == self.signature
        )


_accepted: weakref.WeakKeyDictionary[Any, dict[Any, _AcceptedRecord]] = (
    weakref.WeakKeyDictionary()
)


def consume_sender_record_once(msg: Any, host: Any, peer_id: Any = None) -> bool:
    """`maybe_consume_signed_record`, verifying each distinct record of a peer once.

    Same contract as py-libp2p's: True if the RPC carries no record or a valid
    one of `peer_id` (now stored), False otherwise.
    """
    if peer_id is None or not msg.HasField("senderRecord"):
        return _original_consume(msg, host, peer_id)
    raw = msg.senderRecord
    peerstore = host.get_peerstore()
    per_peer = _accepted.setdefault(peerstore, {})
    now = time.monotonic()
    known = per_peer.get(peer_id)
    if (
        known is not None
        and known.raw == raw
        and now - known.verified_at < SENDER_RECORD_REFRESH_S
        and known.still_stored(peerstore.get_peer_record(peer_id))
    ):
        return True
    if not _original_consume(msg, host, peer_id):
        per_peer.pop(peer_id, None)
        return False
    envelope = peerstore.get_peer_record(peer_id)
    if envelope is not None:
        if len(per_peer) >= SENDER_RECORD_CACHE_PEERS:
            per_peer.clear()
        per_peer[peer_id] = _AcceptedRecord(
            bytes(raw), bytes(envelope.raw_payload), bytes(envelope.signature), now
        )
    return True


# -- GossipSub mesh upkeep ----------------------------------------------------------------

_original_mesh_heartbeat: Callable[..., Any] = GossipSub.mesh_heartbeat


def prune_with_backoff(self: GossipSub) -> Any:
    """`GossipSub.mesh_heartbeat`, recording a backoff for every peer it prunes (as the
    PRUNE it sends announces), so that a later heartbeat does not GRAFT it again early."""
    to_graft, to_prune = _original_mesh_heartbeat(self)
    for peer, topics in to_prune.items():
        for topic in topics:
            self._add_back_off(peer, topic, False)
    return to_graft, to_prune


def install() -> None:
    """Install the changes (idempotent); called by `run_host` before building a host."""
    YamuxStream._auto_tune_and_send_window_update = (  # type: ignore[method-assign]
        _grant_credit_when_half_consumed
    )
    for module in _CALLERS:
        setattr(module, _CONSUME, consume_sender_record_once)
    GossipSub.mesh_heartbeat = prune_with_backoff  # type: ignore[method-assign]


# -- the service manager's task tree ------------------------------------------------------


def memoize_task_parents(manager: Any) -> None:
    """Make `manager.run_task` find the calling task's parent once per trio task, not per call.

    py-libp2p's TrioManager finds the parent of every task it starts by walking its
    whole task tree (recursive generators) for the calling trio task. Pubsub starts a
    task per gossip message received, from the connection's reader, which is never
    one of the manager's tasks: each message paid a full walk, O(tasks) and so
    O(peers). Which FunctionTask runs in a given trio task never changes (a
    FunctionTask records its trio task first thing, and a trio task runs one
    FunctionTask or none), so the answer is remembered per trio task.
    """
    find: Callable[[Any], Any] = manager._find_parent_task
    known: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    def find_once(trio_task: Any) -> Any:
        try:
            return known[trio_task]
        except KeyError:
            parent = known[trio_task] = find(trio_task)
            return parent

    manager._find_parent_task = find_once

