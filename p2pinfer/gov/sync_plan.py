"""`SyncPlan`: which connected peers a node's governance syncs with, and when."""

from __future__ import annotations

from collections.abc import Sequence


class SyncPlan:
    """Which connected peers to sync with: each new connection once, then one peer in turn.

    A peer that disconnects is forgotten, so it is synced again when it reconnects.
    """

    def __init__(self) -> None:
        self._synced: list[str] = []  # connected peers synced since they connected, in turn order
        self._turn = 0

    def new_peers(self, connected: Sequence[str]) -> list[str]:
        """The peers in `connected` not synced since they connected (now counted as synced)."""
        live = set(connected)
        self._synced = [p for p in self._synced if p in live]
        known = set(self._synced)
        fresh = [p for p in dict.fromkeys(connected) if p not in known]
        self._synced += fresh
        return fresh

    def next_in_turn(self) -> str | None:
        """The next connected, already synced peer in round-robin order; None if there is none."""
        if not self._synced:
            return None
        self._turn %= len(self._synced)
        peer = self._synced[self._turn]
        self._turn += 1
        return peer
