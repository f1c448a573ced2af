"""Spot-checks in the simulator, scored by the nodes' own reputation and stake code.

Each day a provider's jobs are checked at `verify.reputation.check_rate_pm`
(the probation rate while `on_probation`); a check of a faked job fails, and
so, rarely, does a check of an honest one. Every outcome moves the score
through `verify.reputation.observe`; a failure that trips the circuit
breaker (`verify.breaker.record`: score below its threshold) is taken as
proven fraud: the provider's stake is slashed by `market.stake.slash_amount`
and, once it no longer `meets_minimum`, consumers drop it for good.

Speed: `observe` is a pure function of (score, outcome) for the score, so
its results are cached, and a provider with no failure today whose score is
already a fixed point of a passed check is skipped (`observe` would return
the same score). Only spot-check outcomes move the simulated score: job
success and latency observations, and the breaker's minute-scale cooldowns,
are below a day's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from p2pinfer.market.stake import StakeStatus, meets_minimum, slash_amount
from p2pinfer.sim.agents import F64, I64, Providers
from p2pinfer.verify import breaker as B
from p2pinfer.verify import reputation as R

_PASS, _FAIL = R.Outcome.CHECK_PASSED, R.Outcome.CHECK_FAILED


@dataclass(frozen=True)
class CheckDay:
    """What one day of spot-checks did."""

    checks: int
    failures: int
    #: Row indices of providers whose failure tripped the breaker (fraud taken as proven).
    caught: tuple[int, ...]


class CheckModel:
    """Scores providers with `verify.reputation` (cached) and decides who is caught."""

    def __init__(self, params: R.ReputationParams) -> None:
        self.params = params
        self._step: dict[tuple[int, bool], int] = {}
        self._trips: dict[int, bool] = {}
        self._fixed: set[int] = set()

    def initial_score_ppm(self) -> int:
        return R.new_peer("sim", 0, self.params).score_ppm

    def step(self, score_ppm: int, passed: bool) -> int:
        """The score after one check, as `reputation.observe` computes it."""
        key = (score_ppm, passed)
        out = self._step.get(key)
        if out is None:
            rec = R.PeerReputation("sim", score_ppm, 0, 0)
            out = R.observe(rec, _PASS if passed else _FAIL, 0, self.params).score_ppm
            self._step[key] = out
            if passed and out == score_ppm:
                self._fixed.add(score_ppm)
        return out

    def trips(self, score_ppm: int) -> bool:
        """Whether a failure leaving this score opens the breaker (`breaker.record`)."""
        score_pm = score_ppm // R.PER_MILLE
        hit = self._trips.get(score_pm)
        if hit is None:
            brk = B.record(B.CLOSED, False, score_pm, 0, self.params.breaker)
            hit = self._trips[score_pm] = brk.state is B.BreakerState.OPEN
        return hit

    def check_rates_pm(self, pop: Providers, day: int) -> I64:
        """Each provider's check rate today; ends probation where `on_probation` says so."""
        now = day * R.DAY_MS
        graduated = R.PeerReputation("sim", 0, -self.params.probation_ms, now,
                                     jobs_ok=self.params.probation_jobs)
        newcomer = R.PeerReputation("sim", 0, now, now)
        rates = np.full(len(pop), R.check_rate_pm(graduated, now, self.params), np.int64)
        rows = np.flatnonzero(pop.probation)
        # Providers that joined the same day differ only in jobs done, and more jobs never
        # put a peer (back) on probation: ask on_probation for the group's least and most
        # busy member, and row by row only where those two disagree.
        for first in np.unique(pop.first_day[rows]).tolist():
            group = rows[pop.first_day[rows] == first]
            jobs = pop.jobs[group]
            decide = [self._on_probation(first, int(jobs.min()), now),
                      self._on_probation(first, int(jobs.max()), now)]
            if decide[0] == decide[1]:
                pop.probation[group] = decide[0]
            else:
                for i in group.tolist():
                    pop.probation[i] = self._on_probation(first, int(pop.jobs[i]), now)
        rates[pop.probation] = R.check_rate_pm(newcomer, now, self.params)
        return rates

    def _on_probation(self, first_day: int, jobs: int, now_ms: int) -> bool:
        rec = R.PeerReputation("sim", 0, first_day * R.DAY_MS, now_ms, jobs_ok=jobs)
        return R.on_probation(rec, now_ms, self.params)

    def _passes(self, score: int, count: int) -> int:
        for _ in range(count):
            nxt = self.step(score, True)
            if nxt == score:
                break
            score = nxt
        return score

    def _only_passes(self, pop: Providers, rows: I64, checks: I64) -> None:
        # Rows with the same score and number of checks end the same: walk each pair once.
        if not len(rows):
            return
        key = pop.score_ppm[rows] << 40 | checks[rows]
        uniq, inverse = np.unique(key, return_inverse=True)
        ends = np.array([self._passes(int(k) >> 40, int(k) & (2**40 - 1)) for k in uniq.tolist()],
                        np.int64)
        pop.score_ppm[rows] = ends[inverse]

    def run_day(self, pop: Providers, jobs: I64, fail_rate: F64, day: int,
                gen: np.random.Generator) -> CheckDay:
        """Check today's `jobs` per provider; update scores in place; return who is caught.

        Each job is independently checked-and-failed (p = rate × fail rate),
        checked-and-passed, or not checked. Failures are drawn for everyone;
        passes only for providers whose score can move (a failure today, or a
        score that is not yet a fixed point), and as one total per
        probability for everyone else - the same distribution, far fewer draws.
        """
        p_check = self.check_rates_pm(pop, day) / 1000
        p_fail = p_check * fail_rate
        fails = gen.binomial(jobs, p_fail) if bool((p_fail > 0).any()) \
            else np.zeros(len(pop), np.int64)
        p_pass = np.where(p_fail < 1, p_check * (1 - fail_rate) / np.maximum(1 - p_fail, 1e-12),
                          0.0)
        fixed = np.fromiter(self._fixed, np.int64, len(self._fixed))
        need = (fails > 0) | (~np.isin(pop.score_ppm, fixed) & (jobs > 0))
        rows = np.flatnonzero(need)
        passes = gen.binomial(jobs[rows] - fails[rows], p_pass[rows])
        total = int(fails.sum()) + int(passes.sum())
        rest = np.flatnonzero(~need)
        for p in np.unique(p_pass[rest]).tolist():
            same = rest[p_pass[rest] == p]
            total += int(gen.binomial(int(jobs[same].sum()), p)) if p > 0 else 0
        checks = np.zeros(len(pop), np.int64)
        checks[rows] = passes + fails[rows]
        self._only_passes(pop, rows[fails[rows] == 0], checks)
        caught: list[int] = []
        for i in np.flatnonzero(fails > 0).tolist():
            n, k = int(checks[i]), int(fails[i])
            score = int(pop.score_ppm[i])
            done = 0
            for pos in np.sort(gen.choice(n, k, replace=False)).tolist():
                score = self._passes(score, pos - done)
                score = self.step(score, False)
                done = pos + 1
                if self.trips(score):
                    caught.append(i)
                    break
            else:
                score = self._passes(score, n - done)
            pop.score_ppm[i] = score
        return CheckDay(total, int(fails.sum()), tuple(caught))


def slash(stake: int, fraction_bp: int, minimum: int) -> tuple[int, bool]:
    """(µcredits slashed, whether the provider still meets the minimum stake afterwards)."""
    status = StakeStatus(stake, 0, 0)
    amount = slash_amount(status, fraction_bp)
    return amount, meets_minimum(StakeStatus(stake, amount, 0), minimum)
