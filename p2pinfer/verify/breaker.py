"""Circuit breaker per peer: stop sending jobs to a peer whose reputation collapsed.

    CLOSED    --failure leaving score < threshold-->  OPEN (cooldown starts)
    OPEN      --cooldown elapsed, on allow()------->  HALF_OPEN (one probe job)
    HALF_OPEN --probe succeeds--------------------->  CLOSED
    HALF_OPEN --probe fails------------------------>  OPEN (cooldown doubled, capped)

Only a failure trips the breaker (a success never does, even with a low
score), so a peer climbing back after a probe is not thrown out by its own
good results. The cooldown doubles on each trip until the score is back at
or above the threshold. All functions are pure: `now_ms` is an argument and
`CircuitBreaker` takes an injected clock.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerParams:
    """Threshold (per mille of reputation) and cooldowns (ms)."""

    threshold_pm: int = 700
    cooldown_ms: int = 60_000
    max_cooldown_ms: int = 3_600_000


@dataclass(frozen=True)
class Breaker:
    """One peer's breaker. `trips`: consecutive trips since the score was last healthy."""

    state: BreakerState = BreakerState.CLOSED
    opened_at_ms: int = 0
    cooldown_ms: int = 0
    trips: int = 0
    #: When the half-open probe was granted (None: no probe out).
    probe_since_ms: int | None = None


CLOSED = Breaker()


def _trip(b: Breaker, now_ms: int, params: BreakerParams) -> Breaker:
    cooldown = min(params.cooldown_ms << min(b.trips, 32), params.max_cooldown_ms)
    return Breaker(BreakerState.OPEN, now_ms, cooldown, b.trips + 1, None)


def allow(b: Breaker, now_ms: int, params: BreakerParams) -> tuple[bool, Breaker]:
    """Whether a job may go to the peer now, and the breaker after granting it.

    OPEN turns HALF_OPEN once the cooldown is over and grants one probe; a
    probe that never reports back is re-granted after another cooldown.
    """
    if b.state is BreakerState.CLOSED:
        return True, b
    if b.state is BreakerState.OPEN:
        if now_ms >= b.opened_at_ms + b.cooldown_ms:
            return True, replace(b, state=BreakerState.HALF_OPEN, probe_since_ms=now_ms)
        return False, b
    if b.probe_since_ms is None or now_ms >= b.probe_since_ms + b.cooldown_ms:
        return True, replace(b, probe_since_ms=now_ms)
    return False, b


def record(
    b: Breaker, success: bool, score_pm: int, now_ms: int, params: BreakerParams
) -> Breaker:
    """The breaker after an outcome, given the peer's score after that outcome."""
    healthy = score_pm >= params.threshold_pm
    if b.state is BreakerState.CLOSED:
        if not success and not healthy:
            return _trip(b, now_ms, params)
        return replace(b, trips=0) if healthy and b.trips else b
    if b.state is BreakerState.OPEN:
        # Outcomes of jobs sent before the trip do not shorten the cooldown.
        return b
    if success:
        return Breaker(BreakerState.CLOSED, 0, 0, 0 if healthy else b.trips, None)
    return _trip(b, now_ms, params)


class CircuitBreaker:
    """A stateful breaker for one peer, reading time from `clock` (ms)."""

    def __init__(self, params: BreakerParams, clock: Callable[[], int]) -> None:
        self.params = params
        self._clock = clock
        self.breaker = CLOSED

    @property
    def state(self) -> BreakerState:
        return self.breaker.state

    def allow(self) -> bool:
        """Whether a job may be sent now (grants the half-open probe)."""
        ok, self.breaker = allow(self.breaker, self._clock(), self.params)
        return ok

    def record(self, success: bool, score_pm: int) -> None:
        """Report a job's outcome and the peer's score after it."""
        self.breaker = record(self.breaker, success, score_pm, self._clock(), self.params)
