"""Circuit breaker transitions under an injected clock."""

from __future__ import annotations

from p2pinfer.verify.breaker import BreakerParams, BreakerState, CircuitBreaker
from tests.support.clocks import FakeClock

PARAMS = BreakerParams(threshold_pm=700, cooldown_ms=1_000, max_cooldown_ms=3_000)


def tripped() -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    cb = CircuitBreaker(PARAMS, clock)
    cb.record(success=False, score_pm=650)
    return cb, clock


def test_closed_breaker_lets_jobs_through_and_survives_failures_above_threshold() -> None:
    cb = CircuitBreaker(PARAMS, FakeClock())
    cb.record(success=False, score_pm=800)
    cb.record(success=True, score_pm=600)  # a success never trips, even with a low score
    assert cb.state is BreakerState.CLOSED and cb.allow()


def test_a_failure_below_the_threshold_opens_it_for_the_cooldown() -> None:
    cb, clock = tripped()
    assert cb.state is BreakerState.OPEN
    assert not cb.allow()
    clock.now = 999
    assert not cb.allow()
    cb.record(success=True, score_pm=900)  # a late result does not close it early
    assert cb.state is BreakerState.OPEN and not cb.allow()


def test_after_the_cooldown_exactly_one_probe_goes_through() -> None:
    cb, clock = tripped()
    clock.now = 1_000
    assert cb.allow()
    assert cb.state is BreakerState.HALF_OPEN
    assert not cb.allow()  # only one probe at a time


def test_a_successful_probe_closes_it() -> None:
    cb, clock = tripped()
    clock.now = 1_000
    assert cb.allow()
    cb.record(success=True, score_pm=690)
    assert cb.state is BreakerState.CLOSED and cb.allow()


def test_a_failed_probe_reopens_with_a_doubled_capped_cooldown() -> None:
    cb, clock = tripped()
    cooldowns = []
    for _ in range(4):
        clock.now = cb.breaker.opened_at_ms + cb.breaker.cooldown_ms
        assert cb.allow()
        cb.record(success=False, score_pm=500)
        assert cb.state is BreakerState.OPEN
        cooldowns.append(cb.breaker.cooldown_ms)
    assert cooldowns == [2_000, 3_000, 3_000, 3_000]


def test_cooldown_resets_once_the_score_is_healthy_again() -> None:
    cb, clock = tripped()
    clock.now = 1_000
    cb.allow()
    cb.record(success=True, score_pm=650)
    assert cb.breaker.trips == 1  # still weak: the next trip would wait longer
    cb.record(success=True, score_pm=710)
    assert cb.breaker.trips == 0
    cb.record(success=False, score_pm=690)
    assert cb.breaker.cooldown_ms == 1_000


def test_a_lost_probe_is_granted_again_after_another_cooldown() -> None:
    cb, clock = tripped()
    clock.now = 1_000
    assert cb.allow()
    clock.now = 1_999
    assert not cb.allow()
    clock.now = 2_000
    assert cb.allow()
