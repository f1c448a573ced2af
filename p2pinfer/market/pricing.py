"""Prices in integer micro-credits, from the founding document's dynamic-price formula.

    price per 1k tokens = base rate × demand multiplier × supply multiplier
    demand multiplier   = 1 + (d − 1) × 0.5        d = utilisation / target utilisation
    supply multiplier   = 1 / (1 + (s − 1) × 0.3)  s = providers serving the model / reference

The arithmetic is exact (fractions) and rounded up once at the end, so a
price is never 0 while the base rate is not, and it is monotonic: never
lower when demand rises, never higher when supply rises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

#: Micro-credits in one credit (the network token).
MICRO_PER_CREDIT = 1_000_000
PER_MILLE = 1_000


@dataclass(frozen=True)
class PricingParams:
    """Tunable pricing constants; defaults are the founding document's."""

    #: Base rate per 1k tokens in micro-credits: the seed's base_inference_rate 0.001 token.
    base_rate_per_1k: int = 1_000
    #: Weight of demand (the seed's 0.5), per mille.
    demand_sensitivity_pm: int = 500
    #: Weight of supply (the seed's 0.3), per mille.
    supply_sensitivity_pm: int = 300
    #: Utilisation at which the demand factor is 1 (neutral), per mille.
    target_utilisation_pm: int = 500
    #: Number of providers serving a model at which the supply factor is 1 (neutral).
    supply_reference: int = 1
    #: Reputation below which a provider earns nothing (the seed's quality_threshold 0.95).
    quality_threshold_pm: int = 950

    def __post_init__(self) -> None:
        if self.base_rate_per_1k < 0:
            raise ValueError("base rate must be >= 0 micro-credits")
        if not 0 <= self.demand_sensitivity_pm <= PER_MILLE:
            raise ValueError("demand sensitivity must be 0..1000 per mille")
        if not 0 <= self.supply_sensitivity_pm <= PER_MILLE:
            raise ValueError("supply sensitivity must be 0..1000 per mille")
        if not 0 < self.target_utilisation_pm <= PER_MILLE:
            raise ValueError("target utilisation must be 1..1000 per mille")
        if self.supply_reference < 1:
            raise ValueError("supply reference must be >= 1 provider")
        if not 0 <= self.quality_threshold_pm <= PER_MILLE:
            raise ValueError("quality threshold must be 0..1000 per mille")


DEFAULT_PRICING = PricingParams()


def demand_factor(utilisation_pm: int, params: PricingParams = DEFAULT_PRICING) -> Fraction:
    """d = utilisation / target utilisation, with utilisation clamped to 0..1000 per mille."""
    u = min(max(utilisation_pm, 0), PER_MILLE)
    return Fraction(u, params.target_utilisation_pm)


def supply_factor(providers: int, params: PricingParams = DEFAULT_PRICING) -> Fraction:
    """s = providers serving the model / reference; at least 1 provider (the one quoting)."""
    return Fraction(max(providers, 1), params.supply_reference)


def demand_multiplier(d: Fraction, params: PricingParams = DEFAULT_PRICING) -> Fraction:
    """1 + (d − 1) × demand sensitivity (the seed's 0.5)."""
    return 1 + (d - 1) * Fraction(params.demand_sensitivity_pm, PER_MILLE)


def supply_multiplier(s: Fraction, params: PricingParams = DEFAULT_PRICING) -> Fraction:
    """1 / (1 + (s − 1) × supply sensitivity (the seed's 0.3)); s > 0 keeps it positive."""
    return 1 / (1 + (s - 1) * Fraction(params.supply_sensitivity_pm, PER_MILLE))


def price_for(
    utilisation_pm: int, providers: int, params: PricingParams = DEFAULT_PRICING
) -> int:
    """Price per 1k tokens in micro-credits for a provider at `utilisation_pm` (0..1000)
    when `providers` peers serve the model: ceil(base × demand mult. × supply mult.)."""
    exact = (
        params.base_rate_per_1k
        * demand_multiplier(demand_factor(utilisation_pm, params), params)
        * supply_multiplier(supply_factor(providers, params), params)
    )
    return math.ceil(exact)


def billable_tokens(prompt_tokens: int, completion_tokens: int) -> int:
    """Tokens a job is charged for: prompt and completion both cost compute."""
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError("token counts are >= 0")
    return prompt_tokens + completion_tokens


def quality_multiplier_pm(
    score_pm: int, threshold_pm: int = DEFAULT_PRICING.quality_threshold_pm
) -> int:
    """The share (per mille) of its reward a provider with reputation `score_pm` receives.

    0 below the threshold (the seed's "minimum accuracy score"), else the score
    itself (the seed's `reward = base × demand × qualityScore`). So an excellent
    provider keeps 95–100% of its share and one under 0.95 keeps nothing; the
    withheld part is burned (see split.split).
    """
    s = min(max(score_pm, 0), PER_MILLE)
    return 0 if s < threshold_pm else s
