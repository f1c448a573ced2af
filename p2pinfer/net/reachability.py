"""A node's reachability as AutoNAT last found it, for the parts that follow it.

The relay service serves HOP only while the node is public, the relay client
reserves slots while it is private, and the DHT answers queries only while
public (docs/network.md, "Reachability"). Each waits on `ReachabilityWatch`
for the verdict to change instead of reading it on a timer of its own: a node
that learns it is private reserves a relay slot, and leaves DHT server mode, as
soon as AutoNAT's round ends, and nothing wakes up while the verdict holds.
"""

from __future__ import annotations

import trio

from p2pinfer.net.autonat_rules import Reachability


class ReachabilityWatch:
    """The current verdict (`status`), set by AutoNAT (`set`), and a wait for its change."""

    def __init__(self, status: Reachability = "unknown") -> None:
        self._status: Reachability = status
        self._changed = trio.Event()

    @property
    def status(self) -> Reachability:
        return self._status

    def set(self, status: Reachability) -> None:
        """Record `status`; a change wakes every task waiting in `changed_from`."""
        if status == self._status:
            return
        self._status = status
        self._changed.set()
        self._changed = trio.Event()

    async def changed_from(self, seen: Reachability) -> Reachability:
        """Return the status once it is not `seen` (at once if it already is not)."""
        while self._status == seen:
            await self._changed.wait()
        return self._status
