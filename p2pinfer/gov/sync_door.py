"""Who may download this node's governance store over the sync stream, and how much.

`/p2pinfer/gov/1.0.0` answers an empty request with the stored messages, so each sync is
a download of up to MAX_SYNC_FRAMES frames that a peer asks for by opening a stream, and
up to MAX_UNSTAKED of those messages may come from authors without verified stake: free
keys' votes, which every node stores and relays. A peer opening syncs in a loop had the
node read its store and write every frame through Noise and Yamux each time (attack 53,
docs/security/governance.md). The door:

- each asking peer: SYNC_BURST syncs, then one every SYNC_EVERY_S (an honest node asks a
  peer once when it connects and one peer in turn every sync interval, 10 s);
- SYNCS_AT_ONCE syncs served at a time, SYNCS_PER_ADDRESS from one address, each for
  at most SERVE_S (so slow readers cannot hold the places for long);
- messages of authors without stake verified here go out within one byte budget for all
  askers together (UNSTAKED_BYTES_PER_S, UNSTAKED_BURST_BYTES); staked authors'
  messages are not held to it, so an honest asker still gets what counts while fresh
  keys spend it.

A refused sync is closed with nothing sent: the asker reads an empty sync, as from a
node that stores nothing, and asks another peer in turn.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import trio

from p2pinfer.bounded import Held, RateLimiter

if TYPE_CHECKING:
    from p2pinfer.net.streams import NetStream

log = logging.getLogger(__name__)

#: Syncs one peer may ask for at once, then one every SYNC_EVERY_S.
SYNC_BURST = 3
SYNC_EVERY_S = 5.0
#: Syncs served at a time, all peers together, and from one address.
SYNCS_AT_ONCE = 8
SYNCS_PER_ADDRESS = 2
#: The longest one sync is served: an honest asker reads a full store in well under a
#: second, so a slow reader holds a place at most this long. (A write that waits for
#: window 5 s fails in py-libp2p's Yamux anyway; one read now and then would not.)
SERVE_S = 5.0
#: Bytes of unstaked authors' messages all syncs together may send: a second's, at once.
UNSTAKED_BYTES_PER_S = 64 * 1024
UNSTAKED_BURST_BYTES = 1024 * 1024
#: Peers whose sync rate is remembered (the least recent forgotten first).
MAX_ASKERS = 4096
_ALL = "all"


class SyncDoor:
    """The bounds above, for one node's sync server."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._askers = RateLimiter(1 / SYNC_EVERY_S, SYNC_BURST, clock, max_keys=MAX_ASKERS)
        self._unstaked = RateLimiter(UNSTAKED_BYTES_PER_S, UNSTAKED_BURST_BYTES, clock,
                                     max_keys=1)
        self._held: Held[str] = Held()  # syncs being served, in all and per address
        self.refused: Counter[str] = Counter()  # syncs refused, by reason
        self.withheld = 0  # unstaked messages left out of syncs, over the budget

    def admit(self, peer: str, address: str | None = None) -> str:
        """Why `peer` (at `address`) may not sync now ("" if it may: then serve it in
        `serving_one`)."""
        if self._held.total >= SYNCS_AT_ONCE:
            reason = f"{SYNCS_AT_ONCE} syncs being served"
        elif address is not None and self._held.of(address) >= SYNCS_PER_ADDRESS:
            reason = f"{SYNCS_PER_ADDRESS} syncs being served to {address}"
        elif self._askers.acquire(peer) > 0.0:
            reason = f"over {SYNC_BURST} syncs then one per {SYNC_EVERY_S:g} s"
        else:
            return ""
        self.refused[reason] += 1
        return reason

    @property
    def serving(self) -> int:
        """Syncs being served now."""
        return self._held.total

    def serving_one(self, address: str | None = None) -> AbstractContextManager[None]:
        """Count a sync as served (from `address`) for the block."""
        return self._held.holding(address)

    def may_send(self, raw: bytes, staked: bool) -> bool:
        """Whether a stored message goes out in the sync being served."""
        if staked or self._unstaked.acquire(_ALL, len(raw)) == 0.0:
            return True
        self.withheld += 1
        return False


async def serve_sync(stream: NetStream, door: SyncDoor,
                     rows: Callable[[], Awaitable[Sequence[tuple[bytes, bool]]]]) -> None:
    """Serve one sync on `stream` if `door` lets its peer in: `rows()` (signed bytes,
    staked author?) in order, unstaked ones within the budget, for at most SERVE_S."""
    address = stream.remote_host
    reason = door.admit(stream.remote_peer_id, address)
    if reason:
        log.debug("governance sync refused peer=%s reason=%s", stream.remote_peer_id, reason)
        return
    with door.serving_one(address), trio.move_on_after(SERVE_S):
        for raw, staked in await rows():
            if door.may_send(raw, staked):
                await stream.write_frame(raw)
