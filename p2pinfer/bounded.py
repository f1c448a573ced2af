"""Tables that remember the most recent entries only, lists read up to a limit, and rate
limits kept per key in such a table: what a peer's messages fill (keys it used, relays it
named, peers it asked) or name (ids, addresses) must not grow without bound, and what a
client or peer may do per second is counted in memory that does not either."""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
H = TypeVar("H", bound=Hashable)


def keep_latest(table: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    """Put `key` last in `table` with `value`; drop the oldest beyond `limit` entries."""
    table.pop(key, None)
    table[key] = value
    while len(table) > limit:
        table.popitem(last=False)


T = TypeVar("T")


def first_distinct(items: Iterable[T], limit: int) -> list[T]:
    """The first `limit` distinct items of `items`, in order (a peer's list may repeat
    itself and run long: what reads it stops at `limit`)."""
    kept: list[T] = []
    seen: set[T] = set()
    for item in items:
        if len(kept) >= limit:
            break
        if item not in seen:
            seen.add(item)
            kept.append(item)
    return kept


@dataclass
class TokenBucket:
    """`burst` tokens, refilled at `rate_per_s`; one request takes one (or its `cost`)."""

    rate_per_s: float
    burst: float
    tokens: float
    updated_s: float

    def take(self, now_s: float, cost: float = 1.0) -> float:
        """Take `cost` tokens: 0.0 if there were as many, else the seconds until there
        will be (a cost over `burst` never fits: infinity)."""
        elapsed = max(0.0, now_s - self.updated_s)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate_per_s)
        self.updated_s = now_s
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        if cost > self.burst:
            return float("inf")
        return (cost - self.tokens) / self.rate_per_s


class RateLimiter:
    """One token bucket per key, the least recently used dropped past `max_keys` (a key
    dropped comes back with a full bucket: the bound must exceed the keys that matter)."""

    def __init__(self, rate_per_s: float, burst: int,
                 clock: Callable[[], float] = time.monotonic, *, max_keys: int = 10_000
                 ) -> None:
        self.rate_per_s, self.burst, self._clock = rate_per_s, burst, clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def acquire(self, key: str, cost: float = 1.0) -> float:
        """0.0 when `key` may go ahead now (taking `cost` of its bucket), else the seconds
        it must wait."""
        if self.rate_per_s <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate_per_s, float(self.burst), float(self.burst), now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now, cost)


class PerMinute(Generic[H]):
    """Events in the last minute, per key and for all keys together (what a peer may ask
    of a node a minute, and all peers together), in at most `max_keys` keys' counts.

    A key is stored only when an event of it is counted: a refused one takes no room.
    Past `max_keys`, keys idle for a minute are forgotten, then (more keys than that
    active within a minute) the least recently counted, down to three quarters of
    `max_keys`, so the sweep runs once per quarter of `max_keys` new keys. A forgotten
    active key starts its own count afresh; the count of all keys still holds it."""

    def __init__(self, *, max_keys: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys, self._clock = max_keys, clock
        self._keys: OrderedDict[H, deque[float]] = OrderedDict()
        self._all: deque[float] = deque()

    def admit(self, key: H, per_key: int, in_all: int | None) -> bool:
        """Count an event for `key`, unless `key` had `per_key` in the last minute or all
        keys together `in_all` (None: this event neither waits on nor counts towards
        that); whether it was counted."""
        now = self._clock()
        window = self._keys.get(key)
        for times in (window, self._all):
            while times and now - times[0] > 60.0:
                times.popleft()
        if len(window or ()) >= per_key or (in_all is not None and len(self._all) >= in_all):
            return False
        if window is None:
            window = self._keys[key] = deque()
        else:
            self._keys.move_to_end(key)
        window.append(now)
        if in_all is not None:
            self._all.append(now)
        if len(self._keys) > self.max_keys:
            self._sweep(now)
        return True

    def wait_s(self, key: H, per_key: int) -> float:
        """0.0 when `key` had fewer than `per_key` events in the last minute (nothing is
        counted), else the seconds until its oldest one leaves the minute."""
        window = self._keys.get(key)
        now = self._clock()
        while window and now - window[0] > 60.0:
            window.popleft()
        if window is None or len(window) < per_key:
            return 0.0
        return max(0.0, window[0] + 60.0 - now)

    def _sweep(self, now: float) -> None:
        for old in [k for k, w in self._keys.items() if not w or now - w[-1] > 60.0]:
            del self._keys[old]
        while len(self._keys) > self.max_keys * 3 // 4:
            self._keys.popitem(last=False)


class Held(Generic[H]):
    """How many of something are held now, in all and per key (a server's open
    connections, syncs being served): a key leaves the table when its count falls to 0,
    so the table holds only keys holding something."""

    def __init__(self) -> None:
        self.total = 0
        self._by_key: Counter[H] = Counter()

    def of(self, key: H) -> int:
        """What `key` holds now (0 for a key holding nothing; it is not added)."""
        return self._by_key[key]

    @contextmanager
    def holding(self, key: H | None) -> Iterator[None]:
        """Count one held for the block, in all and for `key` (None: in all only)."""
        self.total += 1
        if key is not None:
            self._by_key[key] += 1
        try:
            yield
        finally:
            self.total -= 1
            if key is not None:
                self._by_key[key] -= 1
                if self._by_key[key] <= 0:
                    del self._by_key[key]
