"""A clock for tests: the time (ms) moves only when the test moves it."""

from __future__ import annotations


class FakeClock:
    """A millisecond clock (`clock()` returns `now`) that tests set or advance by hand,
    to show what happens after a cooldown, a TTL or a deadline without waiting for it."""

    def __init__(self, now: int = 0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> int:
        """Move the clock `ms` forward; the new time."""
        self.now += ms
        return self.now


class SecondsClock:
    """A monotonic clock in float seconds (as `time.monotonic`) that tests move by hand:
    `now += s`. It starts well past 0, as a real one does."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
