"""Parameters of a simulation: typed, frozen, with documented defaults, and presets.

Money the simulator moves is integer micro-credits (field names end in
`_credits` and are given in whole credits in TOML, converted once here);
fiat is US dollars, used only to value credits and costs. Defaults are the
founding document's where it gives a number (performance table, split,
minimum stake, quality threshold, supply, stabilizer band) and ours
otherwise; docs/tokenomics.md lists which is which.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from p2pinfer.errors import UsageError
from p2pinfer.market.split import BME, RENDER, SEED, SplitPreset
from p2pinfer.market.stake import DEFAULT_MINIMUM_STAKE
from p2pinfer.verify.reputation import DAY_MS, ReputationParams

MICRO = 1_000_000


@dataclass(frozen=True)
class MachineClass:
    """A kind of provider machine and the model class it serves."""

    #: Short name, also the model class (one market per profile).
    name: str
    #: Share of providers (at launch and among joiners) with this profile; shares are normalised.
    share: float
    #: Generation speed range, drawn uniformly per provider (the seed's performance table).
    tokens_per_s_min: float
    tokens_per_s_max: float
    #: Extra electric power while generating, watts (ours: the card's board power).
    load_watts: float
    #: Purchase price of the hardware, USD (ours: 2024-25 street prices).
    hardware_usd: float
    #: Depreciation period, years.
    life_years: float
    #: Base rate of this model class, micro-credits per 1k tokens (the seed's 0.001 for 7B).
    base_rate_per_1k: int
    #: Price of a centralised API for a model of this size, USD per million tokens (ours).
    cloud_usd_per_m: float

    @property
    def mean_tokens_per_s(self) -> float:
        return (self.tokens_per_s_min + self.tokens_per_s_max) / 2

    @property
    def depreciation_usd_per_day(self) -> float:
        return self.hardware_usd / (self.life_years * 365)


#: The seed's performance table (7B Q4 10-30 tokens/s on 4-8 GB, 13B 5-15 on 8-16 GB,
#: 70B 1-5 on 40-80 GB); power, prices and fleet shares are ours.
DEFAULT_HARDWARE: tuple[MachineClass, ...] = (
    MachineClass("7b-q4", 0.6, 10, 30, 120, 300, 3, 1_000, 0.18),
    MachineClass("13b-q4", 0.3, 5, 15, 165, 450, 3, 2_000, 0.30),
    MachineClass("70b-q4", 0.1, 1, 5, 700, 2_500, 3, 5_000, 0.88),
)


@dataclass(frozen=True)
class NetworkParams:
    """Providers: how many, how honest, how they join and leave."""

    initial_providers: int = 1_000
    #: Fraction of the day a provider is online and serving.
    online_fraction: float = 0.8
    #: Fraction of providers (at launch and among joiners) that cheat.
    cheater_fraction: float = 0.05
    #: Fraction of its jobs a cheater fakes (e.g. answers with a smaller model).
    cheat_job_fraction: float = 0.2
    #: Electricity a cheater saves on a faked job, as a fraction of an honest job's.
    cheat_energy_saving: float = 0.5
    #: Probability that a spot-check of an honest job fails anyway (cross-hardware drift).
    honest_check_fail_rate: float = 0.0005
    #: Tokens (prompt + completion) in one job; jobs are what gets spot-checked.
    tokens_per_job: int = 1_000
    #: Daily probability that a provider leaves whatever it earns.
    base_churn_per_day: float = 0.001
    #: Daily probability that a provider losing more than it tolerates leaves.
    unprofitable_exit_per_day: float = 0.05
    #: Mean of the (exponential) daily loss in USD a provider accepts before it may leave.
    loss_tolerance_usd_per_day: float = 0.25
    #: Most joiners a day, as a fraction of current providers, when all of them profit.
    max_join_rate_per_day: float = 0.01
    #: Joiners a day (Poisson mean) who come whatever the economics.
    base_joins_per_day: float = 1.0
    #: Mean (exponential) of the dollars a would-be provider will put into a stake; one whose
    #: budget is below the stake's price does not join.
    stake_budget_usd: float = 2_000.0
    #: Stake each provider buys to join, credits (the seed's minimum_stake 10,000).
    stake_credits: int = DEFAULT_MINIMUM_STAKE // MICRO
    #: What consumers require, credits (stake.DEFAULT_MINIMUM_STAKE).
    minimum_stake_credits: int = DEFAULT_MINIMUM_STAKE // MICRO
    #: Share of the stake a proven fraud slashes, basis points (stake.DEFAULT_SLASH_BP).
    slash_fraction_bp: int = 10_000


@dataclass(frozen=True)
class DemandParams:
    """Consumers: demand per model class, its growth and its response to price."""

    #: Demand at launch as a fraction of the launch fleet's capacity.
    initial_utilisation: float = 0.5
    #: Yearly growth of demand (1.0: doubles each year).
    growth_per_year: float = 1.0
    #: Standard deviation of the daily log-noise on demand.
    noise: float = 0.05
    #: Price elasticity against the reference price (0: demand ignores price).
    elasticity: float = 1.0
    #: The reference is the cloud price less this discount (the seed: 30-50% below).
    reference_discount: float = 0.3
    #: Cap on the price multiplier of demand.
    max_multiplier: float = 3.0


@dataclass(frozen=True)
class CostParams:
    """What running a provider costs, in USD."""

    electricity_usd_per_kwh: float = 0.15
    #: Count hardware depreciation as a cost (the seed lists it); False: electricity only.
    include_depreciation: bool = True
    #: Yearly return the stake's dollar value could earn elsewhere (the seed's "opportunity
    #: cost of capital"), counted as a daily cost of staking.
    capital_cost_per_year: float = 0.10


@dataclass(frozen=True)
class TokenParams:
    """The token: supply, its market and who sells it. Credits are whole credits."""

    #: Minted at genesis (the seed's TokenomicsEngine: 1B total).
    total_supply_credits: int = 1_000_000_000
    #: Of which circulating at genesis (the seed: 100M); the rest is a locked reserve.
    circulating_credits: int = 100_000_000
    #: Credits in the constant-product market pool at genesis (ours), out of circulating.
    pool_credits: int = 50_000_000
    #: Opening token price, USD per credit (ours: 7B at base rate = $0.10/M tokens, 44%
    #: below the cloud reference).
    initial_price_usd: float = 0.10
    #: Credits minted each day and paid to providers by quality-weighted work.
    emission_credits_per_day: int = 0
    #: Emission halves every this many days (0: never).
    emission_halving_days: int = 0
    #: Standard deviation of holders' daily speculative trade, as a fraction of pool USD.
    speculation_noise: float = 0.01
    #: Fraction of their credit balance providers sell each day to pay their bills.
    provider_sell_fraction: float = 0.8
    #: Fraction of its balance the treasury sells each day.
    treasury_sell_fraction: float = 0.0
    #: Hold the token price fixed (no market) - the founding document's projection does.
    fixed_price: bool = False


@dataclass(frozen=True)
class StabilizerParams:
    """The seed's PriceStabilizer: outside ±band around the target, trade 10% of the fund."""

    enabled: bool = False
    #: Target price, USD per credit (0: the opening price).
    target_price_usd: float = 0.0
    band_pct: float = 10.0
    trade_pct: float = 10.0
    #: The fund at genesis: dollars to buy with, credits (from the reserve) to sell.
    fund_usd: float = 500_000.0
    fund_credits: int = 5_000_000


@dataclass(frozen=True)
class PricingSimParams:
    """How the simulator calls market.pricing.price_for."""

    #: False: every charge at the base rate (the document's projection).
    dynamic: bool = True
    demand_sensitivity_pm: int = 500
    supply_sensitivity_pm: int = 300
    target_utilisation_pm: int = 500
    #: Providers of a class at which supply is neutral (0: the class's providers at launch;
    #: the node's default, 1, would price 1,000 providers at 1/300 of the base rate).
    supply_reference: int = 0
    quality_threshold_pm: int = 950


@dataclass(frozen=True)
class ScheduleParams:
    """Exogenous schedules that replace behaviour (used to replay the document's projection)."""

    #: Providers in each year (empty: providers join and leave by profitability).
    providers_per_year: tuple[int, ...] = ()
    #: Jobs (requests) demanded in each year (empty: demand grows by DemandParams).
    jobs_per_year: tuple[int, ...] = ()
    #: False: serve all demand whatever the fleet can do (the document's assumption).
    capacity_limited: bool = True
    #: False: providers have no costs (the document's assumption).
    costs_enabled: bool = True


@dataclass(frozen=True)
class SimParams:
    """Everything a run needs besides the number of days and the random seed."""

    preset: str = SEED.name
    split: SplitPreset = SEED
    network: NetworkParams = field(default_factory=NetworkParams)
    demand: DemandParams = field(default_factory=DemandParams)
    costs: CostParams = field(default_factory=CostParams)
    token: TokenParams = field(default_factory=TokenParams)
    stabilizer: StabilizerParams = field(default_factory=StabilizerParams)
    pricing: PricingSimParams = field(default_factory=PricingSimParams)
    reputation: ReputationParams = field(default_factory=ReputationParams)
    schedule: ScheduleParams = field(default_factory=ScheduleParams)
    hardware: tuple[MachineClass, ...] = DEFAULT_HARDWARE

    def validate(self) -> SimParams:
        """Self, or UsageError naming the first value that cannot be simulated."""
        _check(bool(self.hardware), "at least one [[hardware]] profile is needed")
        for hw in self.hardware:
            _check(hw.share >= 0 and 0 < hw.tokens_per_s_min <= hw.tokens_per_s_max,
                   f"hardware {hw.name!r}: share >= 0 and 0 < tokens_per_s_min <= max")
            _check(hw.base_rate_per_1k > 0 and hw.life_years > 0 and hw.cloud_usd_per_m > 0,
                   f"hardware {hw.name!r}: base rate, life and cloud price must be > 0")
        _check(sum(hw.share for hw in self.hardware) > 0, "hardware shares sum to 0")
        n, t = self.network, self.token
        _check(n.initial_providers >= 0, "network.initial_providers must be >= 0")
        _check(n.tokens_per_job > 0, "network.tokens_per_job must be > 0")
        for name in ("online_fraction", "cheater_fraction", "cheat_job_fraction",
                     "cheat_energy_saving", "honest_check_fail_rate", "base_churn_per_day",
                     "unprofitable_exit_per_day"):
            _check(0 <= getattr(n, name) <= 1, f"network.{name} must be 0..1")
        _check(n.stake_budget_usd > 0, "network.stake_budget_usd must be > 0")
        _check(n.stake_credits >= n.minimum_stake_credits,
               "network.stake_credits is below network.minimum_stake_credits: nobody could join")
        _check(0 <= n.slash_fraction_bp <= 10_000, "network.slash_fraction_bp must be 0..10000")
        _check(t.initial_price_usd > 0, "token.initial_price_usd must be > 0")
        _check(0 < t.pool_credits <= t.circulating_credits <= t.total_supply_credits,
               "token: 0 < pool_credits <= circulating_credits <= total_supply_credits")
        stakes = n.initial_providers * n.stake_credits
        _check(t.pool_credits + stakes <= t.circulating_credits,
               f"token: the launch providers' stakes ({stakes} credits) and the pool do not fit"
               f" in circulating_credits ({t.circulating_credits})")
        _check(self.stabilizer.fund_credits <= t.total_supply_credits - t.circulating_credits,
               "stabilizer.fund_credits must come out of the reserve (total - circulating)")
        for name in ("provider_sell_fraction", "treasury_sell_fraction"):
            _check(0 <= getattr(t, name) <= 1, f"token.{name} must be 0..1")
        _check(t.emission_credits_per_day >= 0 and t.emission_halving_days >= 0,
               "token emission values must be >= 0")
        _check(0 < self.stabilizer.band_pct < 100 and 0 < self.stabilizer.trade_pct <= 100,
               "stabilizer.band_pct must be 0..100 and trade_pct 0..100")
        _check(0 < self.demand.reference_discount < 1, "demand.reference_discount must be 0..1")
        return self


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(f"sim config: {message}")


@dataclass(frozen=True)
class SimPreset:
    """A named economy: a revenue split and an emission schedule."""

    name: str
    split: SplitPreset
    emission_credits_per_day: int
    emission_halving_days: int
    summary: str


#: Ours: the document has no emission numbers. 5,000 credits a day (0.18% of the total
#: supply a year, halving every two years) is 5 credits a provider a day at launch: about
#: the electricity of a 7B provider at the opening price, and an 18% yearly yield on a
#: 10,000-credit stake.
BME_EMISSION_PER_DAY = 5_000
SIM_PRESETS: dict[str, SimPreset] = {
    "seed": SimPreset("seed", SEED, 0, 0,
                      "providers 60 / validators 15 / burn 15 / treasury 10, no emission"),
    "bme": SimPreset("bme", BME, BME_EMISSION_PER_DAY, 730,
                     "burn 50 / providers 25 / stakers 10 / treasury 15 + emission"),
    "render": SimPreset("render", RENDER, BME_EMISSION_PER_DAY, 730,
                        "burn 95 / treasury 5; providers paid by emission"),
}


def preset_params(name: str, base: SimParams | None = None) -> SimParams:
    """`base` (default SimParams()) with the split and emission of sim preset `name`."""
    try:
        preset = SIM_PRESETS[name]
    except KeyError:
        raise UsageError(
            f"unknown sim preset {name!r} (known: {', '.join(SIM_PRESETS)})"
        ) from None
    base = base or SimParams()
    token = replace(base.token, emission_credits_per_day=preset.emission_credits_per_day,
                    emission_halving_days=preset.emission_halving_days)
    return replace(base, preset=name, split=preset.split, token=token)


def reputation_params(check_rate_pm: int, probation_check_rate_pm: int, probation_days: int,
                      probation_jobs: int) -> ReputationParams:
    """The verify part's ReputationParams with the spot-check rates a config sets."""
    return replace(ReputationParams(), check_rate_pm=check_rate_pm,
                   probation_check_rate_pm=probation_check_rate_pm,
                   probation_ms=probation_days * DAY_MS, probation_jobs=probation_jobs)
