"""Credits as typed ("1.5") to token units and back, exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pinfer.settle.units import credits_to_units, units_to_credits, wei_to_ether


@pytest.mark.parametrize(("text", "units"), [
    ("1.5", 1_500_000), ("0.000001", 1), ("2", 2_000_000), (" 10 ", 10_000_000), (3, 3_000_000),
    ("1e2", 100_000_000), ("0", 0),
])
def test_credits_convert_exactly(text: object, units: int) -> None:
    assert credits_to_units(text) == units


@pytest.mark.parametrize("text", ["0.0000001", "-1", "abc", "", "nan", "inf", "1,5"])
def test_amounts_that_are_not_whole_units_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        credits_to_units(text)


@given(st.integers(min_value=0, max_value=10**24))
def test_units_round_trip_through_their_credit_text(units: int) -> None:
    assert credits_to_units(units_to_credits(units)) == units


def test_ether_text_has_no_float_error() -> None:
    assert wei_to_ether(10**18) == "1.0"
    assert wei_to_ether(9_999_826_387_985_780_049) == "9.999826387985780049"
    assert wei_to_ether(1) == "0.000000000000000001"
