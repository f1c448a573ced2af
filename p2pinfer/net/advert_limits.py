"""Bounds on what adverts from unknown keys may cost a node (docs/security/adverts.md).

Keys are free, so every bound here is on what an attacker can make a node hold
or do per connection, not per key: how many new signers one forwarding peer
may introduce a minute, and how many catalog entries and bytes unproven
signers (keys this node never completed a job with) may take.
"""

from __future__ import annotations

SUPPLY_UNPROVEN_CAP = 4
"""Unproven providers of a model that count towards a provider's supply price factor. Keys
are free, so uncapped a Sybil's price-0 adverts would push every honest price towards 0
(256 fakes: 1.3 % of the base rate); capped, they can lower it to at most 1/(1 + 4 x 0.3)
= 45 % of what proven competition alone gives."""

MAX_UNPROVEN_PROVIDERS = 256
"""Catalog entries of unproven signers; past it the least recently heard one is evicted.
Four times the largest testnet we run (bench/scale.py, 50 nodes) so honest newcomers are
never the ones pushed out by each other, and small enough that listing them stays cheap."""

MAX_UNPROVEN_BYTES = 4 * 1024 * 1024
"""Advert bytes (as received) of those entries: 256 typical adverts take ~100 KiB; 64 KiB
adverts (the largest the topic takes) fill it at 64 entries, so memory stays bounded
whatever the adverts hold."""

VERIFIED_CACHE_BYTES = 4 * 1024 * 1024
"""Bytes of verified adverts `AdvertGate` remembers by hash (besides its 1024-entry cap),
so re-deliveries of large adverts cannot grow it to 64 MiB."""

NEW_SIGNER_BURST = 64
"""New signers one forwarding peer may introduce at once: a node joining a 50-node
network hears every other provider through its first peer within one advert interval."""

NEW_SIGNERS_PER_MIN = 32
"""...and after that, per minute (an honest network gains a few providers a minute)."""

MAX_FORWARDERS_TRACKED = 4096
"""Forwarders whose budget is remembered; full (idle) ones are dropped first."""

MINUTE_MS = 60_000


class NewSignerLimit:
    """A token bucket per forwarding peer: one token per new signer it introduces.

    Pure, on the caller's millisecond clock. A forwarder's bucket starts full
    (`burst`) and refills at `per_minute`. Memory: at most `max_forwarders`
    buckets (the connected peers in practice).
    """

    def __init__(
        self,
        *,
        burst: int = NEW_SIGNER_BURST,
        per_minute: int = NEW_SIGNERS_PER_MIN,
        max_forwarders: int = MAX_FORWARDERS_TRACKED,
    ) -> None:
        self.burst = burst
        self.per_minute = per_minute
        self.max_forwarders = max_forwarders
        self._buckets: dict[str, tuple[float, int]] = {}  # forwarder -> (tokens, at ms)

    def take(self, forwarder: str, now_ms: int) -> bool:
        """Spend one of `forwarder`'s tokens if it has one; False (nothing spent) if not."""
        tokens = self.tokens(forwarder, now_ms)
        if tokens < 1:
            return False
        self._buckets[forwarder] = (tokens - 1, now_ms)
        if len(self._buckets) > self.max_forwarders:
            self._prune(now_ms)
        return True

    def tokens(self, forwarder: str, now_ms: int) -> float:
        """`forwarder`'s tokens now."""
        held = self._buckets.get(forwarder)
        if held is None:
            return float(self.burst)
        tokens, at = held
        refill = max(0, now_ms - at) * self.per_minute / MINUTE_MS
        return min(float(self.burst), tokens + refill)

    def _prune(self, now_ms: int) -> None:
        for forwarder in [f for f in self._buckets if self.tokens(f, now_ms) >= self.burst]:
            del self._buckets[forwarder]
        while len(self._buckets) > self.max_forwarders:
            del self._buckets[next(iter(self._buckets))]  # the longest-tracked goes
