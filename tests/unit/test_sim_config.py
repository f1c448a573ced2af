"""Simulation parameters from TOML: documented defaults, overrides, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pinfer.errors import UsageError
from p2pinfer.market.split import BME, RENDER, SEED
from p2pinfer.sim.config import load_params
from p2pinfer.sim.params import SimParams, preset_params

DEFAULTS = Path(__file__).resolve().parents[2] / "docs" / "sim-defaults.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sim.toml"
    path.write_text(text)
    return path


def test_the_documented_defaults_file_is_exactly_the_defaults() -> None:
    assert load_params(DEFAULTS) == preset_params("seed") == SimParams().validate()


def test_presets_set_split_and_emission() -> None:
    assert load_params(None, "seed").split is SEED
    bme, render = load_params(None, "bme"), load_params(None, "render")
    assert bme.split is BME and render.split is RENDER
    assert bme.token.emission_credits_per_day > 0 and render.token.emission_credits_per_day > 0
    assert load_params(None, "seed").token.emission_credits_per_day == 0


def test_a_file_overrides_values_on_top_of_the_preset(tmp_path: Path) -> None:
    path = write(tmp_path, """
preset = "bme"
split = "providers=7000,burn=3000"
[network]
initial_providers = 42
[costs]
electricity_usd_per_kwh = 0.05
[reputation]
check_rate_pm = 100
[[hardware]]
name = "tiny"
share = 1
tokens_per_s_min = 50
tokens_per_s_max = 60
load_watts = 30
hardware_usd = 100
life_years = 2
base_rate_per_1k = 500
cloud_usd_per_m = 0.1
""")
    p = load_params(path)
    assert p.preset == "bme" and p.split.share("providers") == 7000
    assert p.network.initial_providers == 42
    assert p.costs.electricity_usd_per_kwh == 0.05
    assert p.reputation.check_rate_pm == 100 and p.reputation.probation_check_rate_pm == 200
    assert [h.name for h in p.hardware] == ["tiny"]
    assert p.token.emission_credits_per_day == preset_params("bme").token.emission_credits_per_day
    # The command line's preset wins over the file's.
    assert load_params(path, "render").preset == "render"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[network]\nproviders = 3\n", "unknown key network.providers"),
        ("[network]\ninitial_providers = '3'\n", "network.initial_providers must be int"),
        ("[costs]\ninclude_depreciation = 1\n", "costs.include_depreciation must be bool"),
        ("colour = 'red'\n", "unknown key 'colour'"),
        ("preset = 'nope'\n", "unknown sim preset 'nope'"),
        ("[network]\ncheater_fraction = 1.5\n", "network.cheater_fraction must be 0..1"),
        ("[network]\nstake_credits = 5\n", "below network.minimum_stake_credits"),
        ("split = 'providers=10'\n", "sum to 10"),
        ("[reputation]\ncheck_rate_pm = 5000\n", "per mille"),
        ("[[hardware]]\nname = 'x'\n", "hardware[0] lacks"),
        ("[network\n", "not valid TOML"),
    ],
)
def test_bad_values_are_refused_with_one_line_naming_them(tmp_path: Path, text: str,
                                                          problem: str) -> None:
    with pytest.raises(UsageError, match=problem.replace("[", r"\[")) as err:
        load_params(write(tmp_path, text))
    assert "\n" not in str(err.value)


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read sim config"):
        load_params(tmp_path / "absent.toml")


@pytest.mark.parametrize("path", sorted((DEFAULTS.parent / "sim").glob("*.toml")),
                         ids=lambda p: p.name)
def test_the_example_configs_in_docs_load(path: Path) -> None:
    params = load_params(path)
    assert params != preset_params("seed")
