"""Dynamic price from the founding document, in integer micro-credits."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pinfer.market.pricing import (
    DEFAULT_PRICING,
    PricingParams,
    billable_tokens,
    price_for,
    quality_multiplier_pm,
)
from p2pinfer.protocol import charge_for


def seed_formula(base_price: float, demand_factor: float, supply_factor: float) -> float:
    """calculate_dynamic_price, exactly as the founding document writes it."""
    demand_multiplier = 1 + (demand_factor - 1) * 0.5
    supply_multiplier = 1 / (1 + (supply_factor - 1) * 0.3)
    return base_price * demand_multiplier * supply_multiplier


def test_default_base_rate_is_the_seeds_0_001_token() -> None:
    assert DEFAULT_PRICING.base_rate_per_1k == 1_000  # 0.001 credit in micro-credits
    assert DEFAULT_PRICING.quality_threshold_pm == 950


@pytest.mark.parametrize(
    ("utilisation_pm", "providers", "expected"),
    [
        (500, 1, 1000),  # d = 1, s = 1: the base rate
        (1000, 1, 1500),  # fully busy: d = 2 -> x1.5
        (0, 1, 500),  # idle: d = 0 -> x0.5
        (500, 2, 770),  # 1000 / 1.3 = 769.2 -> 770
        (1000, 2, 1154),  # 1500 / 1.3 = 1153.8 -> 1154
        (500, 5, 455),  # 1000 / 2.2 = 454.5 -> 455
        (750, 3, 782),  # 1250 / 1.6 = 781.25 -> 782
    ],
)
def test_worked_examples(utilisation_pm: int, providers: int, expected: int) -> None:
    assert price_for(utilisation_pm, providers) == expected
    d, s = utilisation_pm / 500, providers
    assert expected == math.ceil(seed_formula(1000, d, s) - 1e-9)


@given(u=st.integers(0, 1000), n=st.integers(1, 10_000), base=st.integers(1, 10**9))
def test_price_is_the_seed_formula_rounded_up(u: int, n: int, base: int) -> None:
    params = PricingParams(base_rate_per_1k=base)
    exact = seed_formula(base, u / 500, n)
    price = price_for(u, n, params)
    assert price >= 1
    assert abs(price - exact) <= 1 + exact * 1e-9


@given(u1=st.integers(-100, 1100), u2=st.integers(-100, 1100), n=st.integers(1, 1000),
       base=st.integers(0, 10**7))
def test_price_never_falls_when_demand_rises(u1: int, u2: int, n: int, base: int) -> None:
    params = PricingParams(base_rate_per_1k=base)
    lo, hi = sorted((u1, u2))
    assert price_for(lo, n, params) <= price_for(hi, n, params)


@given(n1=st.integers(0, 10_000), n2=st.integers(0, 10_000), u=st.integers(0, 1000),
       base=st.integers(0, 10**7))
def test_price_never_rises_when_supply_rises(n1: int, n2: int, u: int, base: int) -> None:
    params = PricingParams(base_rate_per_1k=base)
    lo, hi = sorted((n1, n2))
    assert price_for(u, lo, params) >= price_for(u, hi, params)


def test_supply_reference_and_target_utilisation_are_configurable() -> None:
    params = PricingParams(supply_reference=4, target_utilisation_pm=800)
    assert price_for(800, 4, params) == 1000
    assert price_for(800, 2, params) > 1000  # fewer providers than the reference: scarcity


def test_charge_rounds_up_to_a_whole_micro_credit() -> None:
    assert charge_for(1000, 1000) == 1000
    assert charge_for(1000, 1) == 1
    assert charge_for(1154, 345) == 399  # 398.13 -> 399
    assert charge_for(0, 10**6) == 0
    assert billable_tokens(12, 30) == 42


@given(price=st.integers(0, 10**9), tokens=st.integers(0, 10**7))
def test_charge_is_the_ceiling_of_price_times_tokens(price: int, tokens: int) -> None:
    c = charge_for(price, tokens)
    assert c * 1000 >= price * tokens > (c - 1) * 1000 or c == 0


def test_quality_multiplier_is_zero_below_the_threshold_and_the_score_above() -> None:
    assert quality_multiplier_pm(949) == 0
    assert quality_multiplier_pm(950) == 950
    assert quality_multiplier_pm(999) == 999
    assert quality_multiplier_pm(1000) == 1000
    assert quality_multiplier_pm(500, threshold_pm=400) == 500


@given(a=st.integers(-10, 1010), b=st.integers(-10, 1010))
def test_quality_multiplier_never_falls_as_reputation_rises(a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert 0 <= quality_multiplier_pm(lo) <= quality_multiplier_pm(hi) <= 1000
