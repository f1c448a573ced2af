"""Whether a relay cuts the jobs it carries to this node (attack 70).

A relay that holds a NATed provider's slot can bring the relay checks' circuits (a
handshake each, `relay_check.py`) and cut every circuit that carries a job (by size, by
time, or each one a job starts on): the checks pass, the provider keeps the slot, and
every consumer that reaches it through that relay fails. The provider cannot tell one
such cut from a consumer that went away whole (its connection through the relay closed
under the job, `relay_carrier.relayed_end`), so it weighs them: per relay, over the last
`CUT_WINDOW_S`, the accepted jobs whose relayed connection closed under them (by the
consumer connection's PeerID) against the jobs that got their result out. Cuts under
`CUT_KEYS` different consumers, outnumbering the results, make the relay one that cuts
jobs. A consumer that only resets its stream (its connection alive) is not a cut.

Keys are free, so Sybil consumers leaving jobs whole can make a good relay look like
that: each such verdict costs the attacker `CUT_KEYS` keys refused at the provider (they
left unpaid, attack 67), results through the relay in the window outweigh them, and a
node reaches the verdict at most once per `CUT_VERDICT_EVERY_S`, so they can make it
change a good relay once an hour at most.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable

import trio

CUT_WINDOW_S = 600.0  # the jobs that count: those that ended this recently
CUT_KEYS = 3  # different consumers a relay must have cut jobs under
CUT_VERDICT_EVERY_S = 3600.0  # at most one relay found cutting per this long
MAX_ENDS = 256  # job ends remembered per relay


class JobCuts:
    """Relayed job ends per relay, and the verdict they make (see the module doc)."""

    def __init__(self, clock: Callable[[], float] = trio.current_time) -> None:
        self._clock = clock
        self._ends: dict[str, deque[tuple[float, str | None]]] = {}
        self._last_verdict = -math.inf

    def note(self, relay: str, cut_under: str | None) -> bool:
        """One accepted job through `relay` ended: its relayed connection closed under it
        (`cut_under`: the consumer connection's PeerID), or its result went out (None).
        True when the relay now cuts jobs by the rule above (its ends are then forgotten)."""
        now = self._clock()
        ends = self._ends.setdefault(relay, deque(maxlen=MAX_ENDS))
        ends.append((now, cut_under))
        while ends[0][0] < now - CUT_WINDOW_S:
            ends.popleft()
        cuts = [consumer for _, consumer in ends if consumer is not None]
        if len(set(cuts)) < CUT_KEYS or len(cuts) <= len(ends) - len(cuts):
            return False
        if now - self._last_verdict < CUT_VERDICT_EVERY_S:
            return False
        self._last_verdict = now
        del self._ends[relay]
        return True

    def cuts(self, relay: str) -> int:
        """Jobs cut through `relay` that still count."""
        now = self._clock()
        return sum(1 for at, consumer in self._ends.get(relay, ())
                   if consumer is not None and at >= now - CUT_WINDOW_S)

    def keep_only(self, relays: Iterable[str]) -> None:
        """Forget the ends at relays not in `relays` (those this node holds slots at)."""
        held = set(relays)
        for relay in [r for r in self._ends if r not in held]:
            del self._ends[relay]
