"""The founding document's five-year projection: replayed, unpacked, and stress-tested.

The document: providers 1,000 → 100,000 and average revenue per provider
$500 → $1,500 a year, so total revenue $0.5M → $150M. It states no token
price, request size or request volume; we read revenue in credits at $1 a
credit, one request as 1k tokens at its base rate of 0.001 credit, and the
revenue split as the seed preset's.

`replay` runs the simulator under exactly those assumptions (providers on the
document's schedule, the request volume its revenue implies, every request at
the base rate, a fixed token price, no capacity limit, no costs, no churn)
and gets the document's figures back. `stages` then switches the real world
back on, one mechanism at a time. `implied` and `economics` are the arithmetic
of what the table requires of requests, hardware and prices.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from p2pinfer.market.kpis import DayKPIs
from p2pinfer.sim import params as P
from p2pinfer.sim.agents import SECONDS_PER_DAY
from p2pinfer.sim.engine import DAYS_PER_YEAR, simulate


@dataclass(frozen=True)
class YearRow:
    """One year of a projection: providers, revenue per provider, total revenue (USD)."""

    year: int
    providers: float
    avg_revenue_usd: float
    total_revenue_usd: float


#: The document's `revenueProjection`.
DOCUMENT: tuple[YearRow, ...] = (
    YearRow(1, 1_000, 500, 500_000),
    YearRow(2, 5_000, 750, 3_750_000),
    YearRow(3, 15_000, 1_000, 15_000_000),
    YearRow(4, 40_000, 1_200, 48_000_000),
    YearRow(5, 100_000, 1_500, 150_000_000),
)
#: The document's base_inference_rate: 0.001 credit a request, in micro-credits.
BASE_RATE_PER_REQUEST = 1_000
TOKENS_PER_REQUEST = 1_000
CREDIT_USD = 1.0


def requests_per_year(row: YearRow) -> int:
    """Requests a year the row's revenue needs at the base rate and $1 a credit."""
    return round(row.total_revenue_usd / CREDIT_USD * P.MICRO) // BASE_RATE_PER_REQUEST


def document_params(base: P.SimParams | None = None) -> P.SimParams:
    """SimParams that apply the document's assumptions and nothing else."""
    base = base or P.preset_params("seed")
    hardware = tuple(replace(h, base_rate_per_1k=BASE_RATE_PER_REQUEST) for h in base.hardware)
    return replace(
        base,
        hardware=hardware,
        network=replace(base.network, initial_providers=int(DOCUMENT[0].providers),
                        cheater_fraction=0.0, honest_check_fail_rate=0.0, stake_credits=0,
                        minimum_stake_credits=0, tokens_per_job=TOKENS_PER_REQUEST),
        token=replace(base.token, fixed_price=True, initial_price_usd=CREDIT_USD,
                      emission_credits_per_day=0, provider_sell_fraction=1.0,
                      treasury_sell_fraction=1.0, speculation_noise=0.0),
        pricing=replace(base.pricing, dynamic=False),
        stabilizer=replace(base.stabilizer, enabled=False),
        schedule=P.ScheduleParams(
            providers_per_year=tuple(int(r.providers) for r in DOCUMENT),
            jobs_per_year=tuple(requests_per_year(r) for r in DOCUMENT),
            capacity_limited=False, costs_enabled=False),
    )


def yearly(rows: Sequence[DayKPIs]) -> list[YearRow]:
    """Aggregate daily KPIs by year: mean providers, total revenue (USD), revenue per provider."""
    out = []
    for y in range(len(rows) // DAYS_PER_YEAR):
        year = rows[y * DAYS_PER_YEAR:(y + 1) * DAYS_PER_YEAR]
        providers = sum(r.providers for r in year) / len(year)
        revenue = sum(r.revenue_usd for r in year)
        out.append(YearRow(y + 1, providers, revenue / providers if providers else 0.0, revenue))
    return out


def replay(seed: int = 1, base: P.SimParams | None = None) -> list[YearRow]:
    """The simulator under the document's assumptions, five years, aggregated by year."""
    rows = simulate(document_params(base), len(DOCUMENT) * DAYS_PER_YEAR, random.Random(seed))
    return yearly(rows)


@dataclass(frozen=True)
class Stage:
    name: str
    description: str
    years: tuple[YearRow, ...]


def stage_params(base: P.SimParams | None = None) -> list[tuple[str, str, P.SimParams]]:
    """The document's assumptions, then capacity, costs and churn, the stake, the market."""
    base = base or P.preset_params("seed")
    doc = document_params(base)
    capacity = replace(doc, schedule=replace(doc.schedule, capacity_limited=True))
    churn = replace(capacity, schedule=replace(capacity.schedule, providers_per_year=(),
                                               costs_enabled=True))
    staked = replace(churn, network=replace(
        churn.network, stake_credits=base.network.stake_credits,
        minimum_stake_credits=base.network.minimum_stake_credits))
    # The full simulator (its own opening price), with the document's year-1 request volume
    # as the demand at the reference price, growing at the document's revenue growth rate.
    launch_capacity = sum(
        h.share / sum(x.share for x in base.hardware) * h.mean_tokens_per_s
        for h in base.hardware) * SECONDS_PER_DAY * base.network.online_fraction
    year1_tokens_per_day = requests_per_year(DOCUMENT[0]) * TOKENS_PER_REQUEST / DAYS_PER_YEAR
    growth = (DOCUMENT[-1].total_revenue_usd / DOCUMENT[0].total_revenue_usd) ** (
        1 / (len(DOCUMENT) - 1)) - 1
    market = replace(
        base,
        network=replace(base.network, initial_providers=int(DOCUMENT[0].providers)),
        demand=replace(base.demand, growth_per_year=growth, initial_utilisation=(
            year1_tokens_per_day / (launch_capacity * DOCUMENT[0].providers))),
    )
    return [
        ("replay", "the document's assumptions: its providers, its request volume, every "
                     "request at the base rate, $1 a credit, no capacity limit, costs or churn",
         doc),
        ("capacity", "+ the fleet serves only what its tokens/s allow", capacity),
        ("costs+churn", "+ electricity and depreciation; providers join and leave by profit "
                        "(demand still the document's)", churn),
        ("+stake", "+ the seed's 10,000-credit minimum stake, bought at $1 a credit",
         staked),
        ("market", "the full simulator: token market from $0.10 a credit, dynamic prices, "
                   "demand elastic to the cloud price (the document's volume at the "
                   "reference price, growing at its rate), cheaters, stake", market),
    ]


def stages(seed: int = 1, base: P.SimParams | None = None, years: int = 5) -> list[Stage]:
    """Run each stage of `stage_params` for `years` years."""
    out = []
    for name, description, params in stage_params(base):
        rows = simulate(params, years * DAYS_PER_YEAR, random.Random(seed))
        out.append(Stage(name, description, tuple(yearly(rows))))
    return out


@dataclass(frozen=True)
class ImpliedRow:
    """What one year of the document needs, at the base rate and $1 a credit."""

    year: int
    requests_per_year: int
    requests_per_provider_day: float
    #: Share of each profile's capacity (online fraction included) those requests take.
    utilisation_pct: tuple[tuple[str, float], ...]
    #: Fleet-average utilisation (profiles mixed by share).
    fleet_utilisation_pct: float
    #: What a consumer pays per million tokens, and the token price at which a provider at
    #: half load would earn the row's revenue.
    consumer_usd_per_m: float
    price_needed_at_half_load_usd: float
    #: Credits the document's providers lock at the seed's minimum stake.
    staked_credits: int


def implied(params: P.SimParams | None = None) -> list[ImpliedRow]:
    """Requests, utilisation, prices and stake the document's table implies."""
    params = params or P.preset_params("seed")
    hw, net = params.hardware, params.network
    shares = [h.share / sum(x.share for x in hw) for h in hw]
    out = []
    for row in DOCUMENT:
        req = requests_per_year(row)
        per_day = req / row.providers / DAYS_PER_YEAR
        tokens = per_day * TOKENS_PER_REQUEST
        utils = tuple(
            (h.name, tokens / (h.mean_tokens_per_s * SECONDS_PER_DAY * net.online_fraction) * 100)
            for h in hw)
        fleet_capacity = sum(s * h.mean_tokens_per_s for s, h in zip(shares, hw, strict=True)) \
            * SECONDS_PER_DAY * net.online_fraction
        half_load_credits = fleet_capacity / 2 / 1000 * BASE_RATE_PER_REQUEST / P.MICRO
        out.append(ImpliedRow(
            year=row.year, requests_per_year=req, requests_per_provider_day=per_day,
            utilisation_pct=utils, fleet_utilisation_pct=tokens / fleet_capacity * 100,
            consumer_usd_per_m=BASE_RATE_PER_REQUEST / P.MICRO * 1000 * CREDIT_USD,
            price_needed_at_half_load_usd=row.avg_revenue_usd / DAYS_PER_YEAR / half_load_credits,
            staked_credits=int(row.providers) * net.minimum_stake_credits,
        ))
    return out


@dataclass(frozen=True)
class EconomicsRow:
    """A provider of one profile in one year of the document: its take against its costs."""

    year: int
    profile: str
    utilisation_pct: float
    take_usd: float
    electricity_usd: float
    depreciation_usd: float
    stake_capital_usd: float

    @property
    def profit_usd(self) -> float:
        return self.take_usd - self.electricity_usd - self.depreciation_usd \
            - self.stake_capital_usd


def economics(params: P.SimParams | None = None) -> list[EconomicsRow]:
    """Each profile's yearly take (the seed split's provider share of the document's revenue
    per provider) against electricity at the implied load (capped at 100%), depreciation,
    and the cost of capital of a minimum stake at $1 a credit."""
    params = params or P.preset_params("seed")
    share = params.split.share("providers") / 10_000
    out = []
    for row, imp in zip(DOCUMENT, implied(params), strict=True):
        for h, (_, util) in zip(params.hardware, imp.utilisation_pct, strict=True):
            load = min(util, 100.0) / 100
            kwh = h.load_watts * load * params.network.online_fraction * 24 / 1000 * 365
            out.append(EconomicsRow(
                year=row.year, profile=h.name, utilisation_pct=util,
                take_usd=row.avg_revenue_usd * share,
                electricity_usd=kwh * params.costs.electricity_usd_per_kwh,
                depreciation_usd=h.depreciation_usd_per_day * 365,
                stake_capital_usd=params.network.minimum_stake_credits * CREDIT_USD
                * params.costs.capital_cost_per_year,
            ))
    return out


@dataclass(frozen=True)
class UnitCostRow:
    """What a million tokens costs a provider of one profile at full load, in USD."""

    profile: str
    tokens_per_day: float
    electricity: float
    depreciation: float
    stake_capital: float
    cloud: float
    #: The price per million tokens at which the providers' share covers the costs.
    break_even: float


def unit_costs(params: P.SimParams | None = None) -> list[UnitCostRow]:
    """Per-million-token costs at full load (mean tokens/s, online fraction), the stake
    valued at the opening token price, against the cloud price and the break-even price."""
    params = params or P.preset_params("seed")
    share = params.split.share("providers") / 10_000
    out = []
    for h in params.hardware:
        tokens = h.mean_tokens_per_s * SECONDS_PER_DAY * params.network.online_fraction
        per_m = 1e6 / tokens
        kwh = h.load_watts * params.network.online_fraction * 24 / 1000
        electricity = kwh * params.costs.electricity_usd_per_kwh * per_m
        depreciation = h.depreciation_usd_per_day * per_m
        capital = (params.network.stake_credits * params.token.initial_price_usd
                   * params.costs.capital_cost_per_year / 365 * per_m)
        total = electricity + depreciation + capital
        out.append(UnitCostRow(h.name, tokens, electricity, depreciation, capital,
                               h.cloud_usd_per_m, total / share if share else float("inf")))
    return out
