"""Reputation per peer: an exponentially weighted score from what this node observed.

The score is kept in parts per million (shown per mille) and moves toward
each observation's sample by that kind's weight:

    score ← score + (sample − score) × weight × report_weight

    spot-check passed 1.0 / failed 0.0   weight 0.20
    job succeeded 1.0 / failed 0.0       weight 0.05
    latency: min(1, advertised / observed) weight 0.02

A new peer starts at 0.95 (the seed's quality threshold: earns, but one bad
result costs it its reward) and is on probation - checked at a higher rate -
until it has done `probation_jobs` jobs AND `probation_ms` (30 days, the seed's
quality assessment period) have passed since it was first seen. A circuit
breaker (verify.breaker) excludes it when a failure leaves it below 0.70.
Everything here is pure; reputation_store.py keeps it in SQLite.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from p2pinfer.verify import breaker as B

PPM = 1_000_000
PER_MILLE = 1_000
DAY_MS = 86_400_000


class Outcome(enum.Enum):
    CHECK_PASSED = "check_passed"
    CHECK_FAILED = "check_failed"
    JOB_SUCCEEDED = "job_succeeded"
    JOB_FAILED = "job_failed"

    @property
    def success(self) -> bool:
        return self in (Outcome.CHECK_PASSED, Outcome.JOB_SUCCEEDED)


@dataclass(frozen=True)
class ReputationParams:
    """Weights (per mille), probation and breaker settings."""

    initial_score_pm: int = 950
    check_weight_pm: int = 200
    job_weight_pm: int = 50
    latency_weight_pm: int = 20
    probation_jobs: int = 50
    probation_ms: int = 30 * DAY_MS
    probation_check_rate_pm: int = 200
    check_rate_pm: int = 20
    breaker: B.BreakerParams = field(default_factory=B.BreakerParams)


DEFAULT_REPUTATION = ReputationParams()


@dataclass(frozen=True)
class PeerReputation:
    """What this node holds about one peer."""

    peer_id: str
    score_ppm: int
    first_seen_ms: int
    updated_ms: int
    jobs_ok: int = 0
    jobs_failed: int = 0
    checks_passed: int = 0
    checks_failed: int = 0
    breaker: B.Breaker = B.CLOSED

    @property
    def score_pm(self) -> int:
        """The score per mille (0..1000), what pricing's quality multiplier takes."""
        return self.score_ppm // PER_MILLE

    @property
    def jobs(self) -> int:
        return self.jobs_ok + self.jobs_failed


@dataclass(frozen=True)
class ReporterRecord:
    """Of one peer's gossiped reports, those this node re-ran itself: found right, and
    found false (what earns its other reports weight: verify.reports.reporter_weight_pm)."""

    peer_id: str
    confirmed: int = 0
    false_reports: int = 0


def new_peer(peer_id: str, now_ms: int, params: ReputationParams = DEFAULT_REPUTATION
) -> PeerReputation:
    """The record of a peer seen for the first time at `now_ms`."""
    return PeerReputation(peer_id, params.initial_score_pm * PER_MILLE, now_ms, now_ms)


def ewma(score_ppm: int, sample_ppm: int, weight_ppm: int) -> int:
    """score + (sample − score) × weight, all in ppm, rounded to the nearest ppm."""
    return (score_ppm * (PPM - weight_ppm) + sample_ppm * weight_ppm + PPM // 2) // PPM


def _weight_ppm(weight_pm: int, report_weight_pm: int) -> int:
    return weight_pm * min(max(report_weight_pm, 0), PER_MILLE)


def observe(
    rec: PeerReputation,
    outcome: Outcome,
    now_ms: int,
    params: ReputationParams = DEFAULT_REPUTATION,
    *,
    report_weight_pm: int = PER_MILLE,
) -> PeerReputation:
    """The record after `outcome`. `report_weight_pm` scales the step: 1000 for what this
    node saw itself, the reporter's own score for a report heard on gossip."""
    is_check = outcome in (Outcome.CHECK_PASSED, Outcome.CHECK_FAILED)
    weight = params.check_weight_pm if is_check else params.job_weight_pm
    sample = PPM if outcome.success else 0
    score = ewma(rec.score_ppm, sample, _weight_ppm(weight, report_weight_pm))
    brk = B.record(rec.breaker, outcome.success, score // PER_MILLE, now_ms, params.breaker)
    return replace(
        rec,
        score_ppm=score,
        updated_ms=now_ms,
        breaker=brk,
        checks_passed=rec.checks_passed + (outcome is Outcome.CHECK_PASSED),
        checks_failed=rec.checks_failed + (outcome is Outcome.CHECK_FAILED),
        jobs_ok=rec.jobs_ok + (outcome is Outcome.JOB_SUCCEEDED),
        jobs_failed=rec.jobs_failed + (outcome is Outcome.JOB_FAILED),
    )


def observe_latency(
    rec: PeerReputation,
    advertised_ms: int,
    observed_ms: int,
    now_ms: int,
    params: ReputationParams = DEFAULT_REPUTATION,
) -> PeerReputation:
    """The record after a job took `observed_ms` where the advert promised `advertised_ms`.

    Sample = min(1, advertised / observed): as fast as promised or faster is
    perfect. Latency moves the score but never trips the breaker by itself.
    """
    if observed_ms <= advertised_ms or observed_ms <= 0:
        sample = PPM
    else:
        sample = max(advertised_ms, 0) * PPM // observed_ms
    score = ewma(rec.score_ppm, sample, _weight_ppm(params.latency_weight_pm, PER_MILLE))
    return replace(rec, score_ppm=score, updated_ms=now_ms)


def on_probation(rec: PeerReputation, now_ms: int, params: ReputationParams = DEFAULT_REPUTATION
) -> bool:
    """New until it has done `probation_jobs` jobs and `probation_ms` have passed."""
    return rec.jobs < params.probation_jobs or now_ms - rec.first_seen_ms < params.probation_ms


def check_rate_pm(rec: PeerReputation, now_ms: int, params: ReputationParams = DEFAULT_REPUTATION
) -> int:
    """Share (per mille) of this peer's jobs to spot-check: higher while on probation."""
    if on_probation(rec, now_ms, params):
        return params.probation_check_rate_pm
    return params.check_rate_pm


def allow(
    rec: PeerReputation, now_ms: int, params: ReputationParams = DEFAULT_REPUTATION
) -> tuple[bool, PeerReputation]:
    """Whether the breaker lets a job go to this peer now, and the record after asking."""
    ok, brk = B.allow(rec.breaker, now_ms, params.breaker)
    return ok, (rec if brk == rec.breaker else replace(rec, breaker=brk))


def convict(
    rec: PeerReputation, now_ms: int, params: ReputationParams = DEFAULT_REPUTATION
) -> PeerReputation:
    """The record after this node caught the peer cheating with its own signature (an
    overcharge: a signed result claiming more than the signed request and the output
    allow): score 0 (it earns nothing and ranks last) and its breaker open."""
    brk = B.record(rec.breaker, False, 0, now_ms, params.breaker)
    return replace(rec, score_ppm=0, updated_ms=now_ms, breaker=brk,
                   jobs_failed=rec.jobs_failed + 1)
