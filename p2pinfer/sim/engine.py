"""The simulator: one day a step, deterministic under the injected random.Random.

A day: prices from yesterday's utilisation (market.pricing.price_for); demand
(grown, noisy, elastic against the cloud price); capacity-limited service
spread over providers by capacity; one charge per (model class, quality
level) (protocol.charge_for, split.split with pricing.quality_multiplier_pm);
emission minted to providers by quality-weighted work; stakers paid by
stake; spot-checks (sim.checks); sales, speculation and the stabilizer in
the token market (sim.amm); profit, exits and joins. Every credit is an
integer micro-credit in one account, so minted = held + burned holds exactly
after every step, and the step checks it.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from p2pinfer.market.kpis import (
    DayKPIs,
    network_value_usd,
    price_volatility_pct,
    retention_pct,
    revenue_growth_pct,
)
from p2pinfer.market.kpis import utilisation_pct as util_pct
from p2pinfer.market.pricing import PricingParams, price_for, quality_multiplier_pm
from p2pinfer.sim import agents as A
from p2pinfer.sim import amm
from p2pinfer.sim.checks import CheckDay, CheckModel, slash
from p2pinfer.sim.economy import ConservationError, Economy
from p2pinfer.sim.params import MICRO, SimParams

DAYS_PER_YEAR = 365
#: Weight of today's profit in a provider's trailing (about 30-day) profit.
_EWMA = 1 / 30


_NO_CHECKS = CheckDay(0, 0, ())
_EMPTY = np.zeros(0)


@dataclass
class _Tally:
    """What happened today, gathered for the KPI row. `burned`/`minted`: totals at dawn."""

    burned: int
    minted: int
    providers: int
    prices: A.I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    capacity: A.F64 = field(default_factory=lambda: _EMPTY)
    demand: A.F64 = field(default_factory=lambda: _EMPTY)
    served: A.F64 = field(default_factory=lambda: _EMPTY)
    checks: CheckDay = _NO_CHECKS
    caught_cheaters: int = 0
    slashed_honest: int = 0
    market_price: float = 0.0
    price: float = 0.0
    action: amm.Action = amm.Action.NONE
    earnings: float = 0.0
    costs: float = 0.0
    quality: float | None = None
    profitable: float | None = None
    left: int = 0
    joined: int = 0


class Simulation:
    """A network economy evolving one day per `step()`."""

    def __init__(self, params: SimParams, rng: random.Random) -> None:
        self.p = params.validate()
        # Three streams from the one injected rng, so that runs with the same seed but other
        # parameters (e.g. presets side by side) face the same demand and market shocks.
        self.gen, self.demand_gen, self.market_gen = (
            np.random.Generator(np.random.PCG64(rng.getrandbits(128))) for _ in range(3))
        self.checks = CheckModel(params.reputation)
        self.day = 0
        hw, net = params.hardware, params.network
        self.k = len(hw)
        self.quality_table = np.array(
            [quality_multiplier_pm(s, params.pricing.quality_threshold_pm) for s in range(1001)],
            np.int64)
        first = self._scheduled_providers(0) if params.schedule.providers_per_year else \
            net.initial_providers
        self.pop = A.new_providers(first, 0, 0, params, self.gen, self.checks.initial_score_ppm())
        self.next_id = first
        self.eco = Economy(params, int(self.pop.stake.sum()))
        counts = np.bincount(self.pop.profile, minlength=self.k)
        ref = params.pricing.supply_reference
        self.pricing = [
            PricingParams(base_rate_per_1k=h.base_rate_per_1k,
                          demand_sensitivity_pm=params.pricing.demand_sensitivity_pm,
                          supply_sensitivity_pm=params.pricing.supply_sensitivity_pm,
                          target_utilisation_pm=params.pricing.target_utilisation_pm,
                          supply_reference=ref or max(int(counts[c]), 1),
                          quality_threshold_pm=params.pricing.quality_threshold_pm)
            for c, h in enumerate(hw)]
        self._prices: dict[tuple[int, int, int], int] = {}
        cap = A.by_class(self.pop.profile, self.pop.capacity, self.k)
        self.base_demand = cap * params.demand.initial_utilisation
        self.util_pm = np.full(self.k, int(params.demand.initial_utilisation * 1000), np.int64)
        self.revenue: list[int] = []
        self.revenue_usd: list[float] = []
        self.closing: list[float] = []
        self.ids_past: deque[A.I64] = deque(maxlen=31)

    # -- schedules ---------------------------------------------------------------------------

    def _scheduled_providers(self, day: int) -> int:
        sched = self.p.schedule.providers_per_year
        return sched[min(day // DAYS_PER_YEAR, len(sched) - 1)]

    def _scheduled_jobs(self, day: int) -> int:
        """Jobs today such that each year's days add up to its scheduled total exactly."""
        sched = self.p.schedule.jobs_per_year
        total = sched[min(day // DAYS_PER_YEAR, len(sched) - 1)]
        d = day % DAYS_PER_YEAR
        return (d + 1) * total // DAYS_PER_YEAR - d * total // DAYS_PER_YEAR

    # -- one day -----------------------------------------------------------------------------

    def price(self, c: int, util_pm: int, providers: int) -> int:
        """Price per 1k tokens of class `c` (pricing.price_for, memoised)."""
        if not self.p.pricing.dynamic:
            util_pm, providers = self.pricing[c].target_utilisation_pm, \
                self.pricing[c].supply_reference
        key = (c, util_pm, providers)
        got = self._prices.get(key)
        if got is None:
            got = self._prices[key] = price_for(util_pm, providers, self.pricing[c])
        return got

    def _demand(self, prices: A.I64, capacity: A.F64) -> A.F64:
        sched, dem = self.p.schedule, self.p.demand
        if sched.jobs_per_year:
            tokens = self._scheduled_jobs(self.day) * self.p.network.tokens_per_job
            weights = capacity.astype(np.int64) if capacity.sum() > 0 else np.ones(self.k, np.int64)
            return A.apportion_exact(tokens, weights).astype(np.float64)
        growth = (1 + dem.growth_per_year) ** (self.day / DAYS_PER_YEAR)
        noise = np.exp(self.demand_gen.normal(0, dem.noise, self.k)) if dem.noise > 0 else 1.0
        usd_per_m = prices / 1000 * self.eco.market.price_usd
        ref = np.array([h.cloud_usd_per_m for h in self.p.hardware]) * (1 - dem.reference_discount)
        mult = np.minimum(dem.max_multiplier, (ref / usd_per_m) ** dem.elasticity)
        out: A.F64 = self.base_demand * growth * noise * mult
        return out

    def step(self) -> DayKPIs:
        """Advance one day and return its KPIs (ConservationError if credits leaked)."""
        p, pop, eco = self.p, self.pop, self.eco
        t = _Tally(burned=eco.acc.burned, minted=eco.acc.minted, providers=len(pop))
        counts = np.bincount(pop.profile, minlength=self.k)
        t.prices = np.array([self.price(c, int(self.util_pm[c]), int(counts[c]))
                             for c in range(self.k)], np.int64)
        t.capacity = A.by_class(pop.profile, pop.capacity, self.k)
        t.demand = self._demand(t.prices, t.capacity)
        served_c = np.minimum(t.demand, t.capacity) if p.schedule.capacity_limited else t.demand
        served = np.zeros(len(pop), np.int64)
        for c in range(self.k):
            rows = np.flatnonzero(pop.profile == c)
            served[rows] = A.apportion_exact(int(served_c[c]), pop.capacity[rows])
        quality = self.quality_table[np.clip(pop.score_ppm // 1000, 0, 1000)]
        settled = eco.settle(pop, t.prices, served, quality)
        served = settled.served
        t.served = A.by_class(pop.profile, served, self.k)
        self.util_pm = np.minimum(t.served * 1000 // np.maximum(t.capacity, 1),
                                  1000).astype(np.int64)
        earned = settled.paid + eco.emit(served * quality, self.day) + eco.pay_stakers(pop.stake)
        pop.balance += earned
        jobs = served // p.network.tokens_per_job
        t.checks = self.checks.run_day(pop, jobs, self._fail_rates(), self.day, self.gen)
        pop.jobs += jobs
        gone = self._punish(t)
        eco.sell(pop)
        eco.speculate(self.market_gen)
        t.market_price = eco.market.price_usd
        t.action = eco.stabilize()
        t.price = eco.market.price_usd
        self._profit(t, earned, served)
        t.left = self._exits(gone)
        t.joined = self._joins()
        self.revenue.append(settled.revenue)
        self.revenue_usd.append(settled.revenue_usd)
        self.closing.append(t.price)
        self.ids_past.append(pop.ids.copy())
        row = self._record(t)
        self.day += 1
        return row

    def run(self, days: int) -> list[DayKPIs]:
        """Run `days` steps; one KPI row per day."""
        return [self.step() for _ in range(days)]

    # -- providers ---------------------------------------------------------------------------

    def _fail_rates(self) -> A.F64:
        net = self.p.network
        h = net.honest_check_fail_rate
        cheat = net.cheat_job_fraction + (1 - net.cheat_job_fraction) * h
        out: A.F64 = np.where(self.pop.cheater, cheat, h)
        return out

    def _punish(self, t: _Tally) -> A.BOOL:
        """Slash each caught provider (stake burned); the rows that no longer meet the minimum."""
        pop, net = self.pop, self.p.network
        gone = np.zeros(len(pop), np.bool_)
        for i in t.checks.caught:
            amount, still_ok = slash(int(pop.stake[i]), net.slash_fraction_bp,
                                     net.minimum_stake_credits * MICRO)
            self.eco.burn_stake(pop, i, amount)
            gone[i] = not still_ok
            t.caught_cheaters += bool(pop.cheater[i])
        t.slashed_honest = len(t.checks.caught) - t.caught_cheaters
        return gone

    def _profit(self, t: _Tally, earned: A.I64, served: A.I64) -> None:
        """Today's earnings and costs per provider in USD; updates the trailing profit."""
        pop, net, costs = self.pop, self.p.network, self.p.costs
        earn: A.F64 = earned / MICRO * t.price
        cost: A.F64 = np.zeros(len(pop))
        if self.p.schedule.costs_enabled:
            load = np.minimum(served / np.maximum(pop.capacity, 1), 1.0)
            kwh = pop.load_watts * load * net.online_fraction * 24 / 1000
            saving = np.where(pop.cheater, 1 - net.cheat_job_fraction * net.cheat_energy_saving,
                              1.0)
            capital = pop.stake / MICRO * t.price * costs.capital_cost_per_year / 365
            cost = kwh * costs.electricity_usd_per_kwh * saving + pop.fixed_usd_per_day + capital
        profit = earn - cost
        pop.profit_usd = np.where(pop.profit_known,
                                  pop.profit_usd + _EWMA * (profit - pop.profit_usd), profit)
        pop.profit_known[:] = True
        if len(pop):
            t.earnings, t.costs = float(earn.mean()), float(cost.mean())
            t.quality = float(pop.score_ppm.mean()) / 1000
            t.profitable = float((pop.profit_usd >= 0).mean() * 100)

    def _exits(self, gone: A.BOOL) -> int:
        """Drop caught and departing providers; they sell their balance and stake."""
        pop, net = self.pop, self.p.network
        leave = gone.copy()
        if not self.p.schedule.providers_per_year:
            p_exit = net.base_churn_per_day + np.where(
                pop.profit_usd < -pop.tolerance_usd, net.unprofitable_exit_per_day, 0.0)
            leave |= self.gen.random(len(pop)) < p_exit
        if not leave.any():
            return 0
        self.eco.market.sell(int(pop.balance[leave].sum() + pop.stake[leave].sum()))
        pop.keep(~leave)
        return int(leave.sum())

    def _joins(self) -> int:
        pop, net = self.pop, self.p.network
        if self.p.schedule.providers_per_year:
            n = max(self._scheduled_providers(self.day + 1) - len(pop), 0)
        else:
            share = float((pop.profit_usd >= 0).mean()) if len(pop) else 1.0
            lam = net.base_joins_per_day + len(pop) * net.max_join_rate_per_day * share
            n = int(self.gen.poisson(lam))
            # Would-be providers whose budget cannot buy the stake at today's price stay out.
            stake_usd = net.stake_credits * self.eco.market.price_usd
            n = int(self.gen.binomial(n, math.exp(-stake_usd / net.stake_budget_usd)))
        stake = net.stake_credits * MICRO
        if stake:
            n = min(n, self.eco.market.max_buy() // stake)
        if n <= 0:
            return 0
        self.eco.market.buy(n * stake)
        new = A.new_providers(n, self.next_id, self.day + 1, self.p, self.gen,
                              self.checks.initial_score_ppm())
        self.next_id += n
        pop.extend(new)
        return n

    # -- KPIs --------------------------------------------------------------------------------

    def _retention(self) -> float | None:
        if len(self.ids_past) < (self.ids_past.maxlen or 0):
            return None
        before = self.ids_past[0]
        kept = int(np.isin(before, self.pop.ids, assume_unique=True).sum())
        return retention_pct(len(before), kept)

    def _record(self, t: _Tally) -> DayKPIs:
        acc = self.eco.acc
        held = self.eco.check(self.pop, self.day)
        total_served = int(t.served.sum())
        price_1k = float((t.prices * t.served).sum() / total_served) \
            if total_served else float(t.prices.mean())
        rev30 = sum(self.revenue[-30:])
        prev30 = sum(self.revenue[-60:-30]) if self.day >= 59 else 0
        rev30_usd = sum(self.revenue_usd[-30:]) * DAYS_PER_YEAR / min(len(self.revenue_usd), 30)
        staked = int(self.pop.stake.sum())
        return DayKPIs(
            day=self.day, providers=t.providers, joined=t.joined, left=t.left,
            caught_cheaters=t.caught_cheaters, slashed_honest=t.slashed_honest,
            retention_30d_pct=self._retention(),
            utilisation_pct=util_pct(total_served, float(t.capacity.sum())),
            demand_tokens=int(t.demand.sum()), served_tokens=total_served,
            checks=t.checks.checks, check_failures=t.checks.failures,
            price_per_1k_micro=price_1k, price_usd_per_m=price_1k / 1000 * t.price,
            revenue_ucr=self.revenue[-1], revenue_usd=self.revenue_usd[-1],
            revenue_growth_30d_pct=revenue_growth_pct(rev30, prev30),
            provider_earnings_usd=t.earnings, provider_costs_usd=t.costs,
            profitable_pct=t.profitable, mean_quality_pm=t.quality,
            burned_ucr=acc.burned - t.burned, emitted_ucr=acc.minted - t.minted,
            emitted_total_ucr=acc.minted - self.eco.genesis, minted_total_ucr=acc.minted,
            burned_total_ucr=acc.burned, held_ucr=held, supply_ucr=acc.minted - acc.burned,
            circulating_ucr=acc.minted - acc.burned - acc.reserve, staked_ucr=staked,
            treasury_ucr=acc.treasury, market_price_usd=t.market_price, token_price_usd=t.price,
            price_volatility_30d_pct=price_volatility_pct(self.closing[-31:]),
            network_value_usd=network_value_usd(staked / MICRO, t.price, rev30_usd),
            stabilizer=t.action.value,
        )


def simulate(params: SimParams, days: int, rng: random.Random) -> list[DayKPIs]:
    """Run `params` for `days` days with randomness from `rng`; one KPI row per day."""
    if days < 0:
        raise ValueError("days must be >= 0")
    return Simulation(params, rng).run(days)


__all__ = ["ConservationError", "Simulation", "simulate"]
