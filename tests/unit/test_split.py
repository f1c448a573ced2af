"""Revenue split: presets, custom presets from config, exact integer parts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pinfer.errors import UsageError
from p2pinfer.market.split import (
    BME,
    PART_NAMES,
    RENDER,
    SEED,
    SplitPreset,
    make_preset,
    parse_shares,
    preset_named,
    split,
)


@st.composite
def presets(draw: st.DrawFn) -> SplitPreset:
    """Any valid preset: a built-in one or a random custom split of 10000 basis points."""
    if draw(st.booleans()):
        return draw(st.sampled_from([SEED, BME, RENDER]))
    names = draw(st.lists(st.sampled_from(PART_NAMES), min_size=1, unique=True))
    cuts = sorted(draw(st.lists(st.integers(0, 10_000), min_size=len(names) - 1,
                                max_size=len(names) - 1)))
    bounds = [0, *cuts, 10_000]
    return make_preset("custom", [(n, bounds[i + 1] - bounds[i]) for i, n in enumerate(names)])


@given(charge=st.integers(0, 2**62), preset=presets(), quality=st.integers(0, 1000))
def test_parts_always_sum_to_the_charge_and_are_never_negative(
    charge: int, preset: SplitPreset, quality: int
) -> None:
    s = split(charge, preset, quality)
    amounts = [n for _, n in s.parts()]
    assert sum(amounts) == charge
    assert all(n >= 0 for n in amounts)
    assert 0 <= s.forfeited <= s.burn
    # No part gets more than its share; burn gets at least its own.
    for part, n in s.parts():
        if part != "burn":
            assert n <= charge * preset.share(part) // 10_000
    assert s.burn >= charge * preset.share("burn") // 10_000


def test_seed_preset_is_60_15_15_10() -> None:
    s = split(1_000_000, SEED)
    assert (s.providers, s.validators, s.burn, s.treasury, s.stakers) == (
        600_000, 150_000, 150_000, 100_000, 0)


def test_bme_preset_follows_the_prose_50_25_10_15() -> None:
    s = split(1_000_000, BME)
    assert (s.burn, s.providers, s.stakers, s.treasury, s.validators) == (
        500_000, 250_000, 100_000, 150_000, 0)


def test_render_preset_burns_95_and_keeps_a_5_percent_fee() -> None:
    s = split(1_000_000, RENDER, quality_pm=0)
    assert (s.burn, s.treasury, s.providers, s.validators, s.stakers) == (
        950_000, 50_000, 0, 0, 0)
    assert s.forfeited == 0  # nothing to withhold: providers are paid by emission
    assert preset_named("render") is RENDER


def test_rounding_residue_goes_to_burn() -> None:
    s = split(7, SEED)  # 60% of 7 = 4.2 -> 4, 15% -> 1, 10% -> 0, burn 1 + residue 1
    assert (s.providers, s.validators, s.treasury, s.burn) == (4, 1, 0, 2)


def test_quality_multiplier_withholds_part_of_the_providers_share_into_burn() -> None:
    full, scaled = split(10_000, SEED), split(10_000, SEED, quality_pm=960)
    assert scaled.providers == 6_000 * 960 // 1000
    assert scaled.forfeited == 240
    assert scaled.burn == full.burn + 240
    assert split(10_000, SEED, quality_pm=0).providers == 0


def test_custom_preset_without_burn_still_sends_residue_to_burn() -> None:
    preset = parse_shares("coop", "providers=9000,treasury=1000")
    s = split(11, preset)
    assert (s.providers, s.treasury, s.burn) == (9, 1, 1)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("providers=6000,burn=3000", "sum to 9000"),
        ("providers=6000,burn=4001", "sum to 10001"),
        ("miners=10000", "unknown part"),
        ("providers=5000,providers=5000", "given twice"),
        ("providers=-1,burn=10001", "expected part=basis_points"),
        ("providers=60%", "expected part=basis_points"),
        ("providers", "expected part=basis_points"),
    ],
)
def test_invalid_custom_presets_are_refused_with_the_reason(spec: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        parse_shares("bad", spec)


def test_presets_are_found_by_name_custom_first() -> None:
    custom = parse_shares("seed", "providers=10000")
    assert preset_named("bme") is BME
    assert preset_named("seed", [custom]) is custom
    with pytest.raises(UsageError, match="unknown split preset"):
        preset_named("nope")


def test_a_negative_charge_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        split(-1, SEED)
