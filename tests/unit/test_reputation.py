"""Reputation: EWMA score, probation, breaker wiring (pure functions)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pinfer.verify.breaker import BreakerState
from p2pinfer.verify.reputation import (
    DAY_MS,
    DEFAULT_REPUTATION,
    Outcome,
    allow,
    check_rate_pm,
    ewma,
    new_peer,
    observe,
    observe_latency,
    on_probation,
)

PEER = "12D3KooWTestPeer"


def test_a_new_peer_starts_at_the_quality_threshold_on_probation() -> None:
    rec = new_peer(PEER, 0)
    assert rec.score_pm == 950
    assert on_probation(rec, 0)
    assert check_rate_pm(rec, 0) == DEFAULT_REPUTATION.probation_check_rate_pm == 200


def test_probation_ends_after_both_50_jobs_and_30_days() -> None:
    rec = new_peer(PEER, 0)
    for i in range(50):
        rec = observe(rec, Outcome.JOB_SUCCEEDED, i)
    assert on_probation(rec, 30 * DAY_MS - 1)  # enough jobs, not enough time
    assert not on_probation(rec, 30 * DAY_MS)
    assert check_rate_pm(rec, 30 * DAY_MS) == 20
    idle = new_peer(PEER, 0)
    assert on_probation(idle, 365 * DAY_MS)  # time alone is not enough


def test_a_failed_check_costs_a_fifth_of_the_score() -> None:
    rec = observe(new_peer(PEER, 0), Outcome.CHECK_FAILED, 1)
    assert rec.score_ppm == 760_000
    assert rec.checks_failed == 1


def test_gossip_reports_weigh_by_the_reporters_reputation() -> None:
    own = observe(new_peer(PEER, 0), Outcome.CHECK_FAILED, 1)
    heard = observe(new_peer(PEER, 0), Outcome.CHECK_FAILED, 1, report_weight_pm=500)
    assert heard.score_ppm == 855_000 > own.score_ppm


def test_latency_against_the_advert_moves_the_score() -> None:
    rec = new_peer(PEER, 0)
    assert observe_latency(rec, 1_000, 900, 1).score_ppm > rec.score_ppm
    slow = observe_latency(rec, 1_000, 4_000, 1)  # sample 0.25
    assert slow.score_ppm == ewma(950_000, 250_000, 20_000)
    assert slow.breaker.state is BreakerState.CLOSED


def test_repeated_failures_trip_the_breaker_and_it_probes_after_the_cooldown() -> None:
    rec = new_peer(PEER, 0)
    rec = observe(rec, Outcome.CHECK_FAILED, 1)  # 760: still above 700
    assert allow(rec, 1)[0]
    rec = observe(rec, Outcome.CHECK_FAILED, 2)  # 608: open
    assert rec.breaker.state is BreakerState.OPEN
    ok, rec = allow(rec, 2)
    assert not ok
    ok, rec = allow(rec, 2 + DEFAULT_REPUTATION.breaker.cooldown_ms)
    assert ok and rec.breaker.state is BreakerState.HALF_OPEN


def test_an_honest_provider_converges_near_1() -> None:
    rec = new_peer(PEER, 0)
    for i in range(200):
        rec = observe(rec, Outcome.JOB_SUCCEEDED, i)
    assert rec.score_pm >= 999


@given(st.lists(st.sampled_from(list(Outcome)), max_size=60))
def test_score_stays_in_range_and_moves_toward_the_outcome(outcomes: list[Outcome]) -> None:
    rec = new_peer(PEER, 0)
    for i, outcome in enumerate(outcomes):
        after = observe(rec, outcome, i)
        assert 0 <= after.score_ppm <= 1_000_000
        if outcome.success:
            assert after.score_ppm >= rec.score_ppm
        else:
            assert after.score_ppm <= rec.score_ppm
        rec = after
    assert rec.jobs + rec.checks_passed + rec.checks_failed == len(outcomes)
