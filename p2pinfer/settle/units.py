"""Credits as people write them ("1.5") and token units as the chain counts them.

One credit = 10^6 units (`Credit.decimals() == 6`), the ledger's micro-credit, so
amounts cross between ledger and chain unchanged. Conversions are exact (Decimal),
never through a float.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

UNITS_PER_CREDIT = 10**6
WEI_PER_ETHER = 10**18


def credits_to_units(credits: Any) -> int:
    """A number of credits ("1.5", 2, "0.000001") as integer token units, exactly;
    ValueError unless it is a non-negative whole number of units."""
    try:
        amount = Decimal(str(credits).strip()) * UNITS_PER_CREDIT
    except InvalidOperation as exc:
        raise ValueError(f"not a number of credits: {credits!r}") from exc
    if not amount.is_finite() or amount < 0 or amount != amount.to_integral_value():
        raise ValueError(
            f"not a whole number of micro-credits (6 decimals at most): {credits!r}")
    return int(amount)


def units_to_credits(units: int) -> str:
    """Token units as a decimal number of credits, exactly ("1.500000")."""
    whole, frac = divmod(abs(units), UNITS_PER_CREDIT)
    return f"{'-' if units < 0 else ''}{whole}.{frac:06d}"


def wei_to_ether(wei: int) -> str:
    """Wei as a decimal number of ether, exactly, without trailing zeros ("0.5")."""
    whole, frac = divmod(wei, WEI_PER_ETHER)
    text = f"{whole}.{frac:018d}".rstrip("0")
    return text + "0" if text.endswith(".") else text
