"""The token's market and the founding document's price stabilizer.

The market is a constant-product pool (credits × dollars = k), the simplest
market in which buying credits raises their price and selling lowers it by
an amount that depends on the pool's depth. Credits are integer
micro-credits and dollars integer micro-dollars; every trade rounds in the
pool's favour, so k never shrinks and no credit is created or lost.

The stabilizer is the seed's `PriceStabilizer.stabilizePrice`: below
target × (1 − band) it buys credits with `trade_pct` of its dollars, above
target × (1 + band) it sells `trade_pct` of its credits; inside the band it
does nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MICRO = 1_000_000


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Pool:
    """A constant-product pool holding `credits` (µcredits) and `usd` (µUSD)."""

    def __init__(self, credits: int, usd: int) -> None:
        if credits <= 0 or usd <= 0:
            raise ValueError("a pool needs credits and dollars > 0")
        self.credits = credits
        self.usd = usd

    @property
    def price_usd(self) -> float:
        """Dollars per credit (µUSD per µcredit)."""
        return self.usd / self.credits

    def max_buy(self) -> int:
        """Most µcredits one buyer may take in a day: half the pool (the price doubles twice)."""
        return self.credits // 2

    def cost_of(self, credits_out: int) -> int:
        """µUSD it takes to buy `credits_out` µcredits (None-safe: must be < the pool's)."""
        if not 0 <= credits_out < self.credits:
            raise ValueError("cannot buy the whole pool")
        return _ceil_div(self.credits * self.usd, self.credits - credits_out) - self.usd

    def buy(self, credits_out: int) -> int:
        """Take `credits_out` µcredits out of the pool; returns the µUSD paid in."""
        usd_in = self.cost_of(credits_out)
        self.credits -= credits_out
        self.usd += usd_in
        return usd_in

    def spend(self, usd_in: int) -> int:
        """Pay `usd_in` µUSD in; returns the µcredits bought."""
        if usd_in < 0:
            raise ValueError("usd_in must be >= 0")
        out = self.credits - _ceil_div(self.credits * self.usd, self.usd + usd_in)
        self.credits -= out
        self.usd += usd_in
        return out

    def sell(self, credits_in: int) -> int:
        """Put `credits_in` µcredits in; returns the µUSD paid out."""
        if credits_in < 0:
            raise ValueError("credits_in must be >= 0")
        usd_out = self.usd - _ceil_div(self.credits * self.usd, self.credits + credits_in)
        self.credits += credits_in
        self.usd -= usd_out
        return usd_out


class FixedPriceMarket:
    """Counterparties that trade any amount at one price (the document's projection assumes
    a constant token price). `credits` is what they have to sell (µcredits)."""

    def __init__(self, credits: int, price_usd: float) -> None:
        self.credits = credits
        self._price = price_usd

    @property
    def price_usd(self) -> float:
        return self._price

    def max_buy(self) -> int:
        return self.credits

    def buy(self, credits_out: int) -> int:
        if not 0 <= credits_out <= self.credits:
            raise ValueError("cannot buy more than the market holds")
        self.credits -= credits_out
        return round(credits_out * self._price)

    def spend(self, usd_in: int) -> int:
        out = min(int(usd_in / self._price), self.credits)
        self.credits -= out
        return out

    def sell(self, credits_in: int) -> int:
        self.credits += credits_in
        return round(credits_in * self._price)


Market = Pool | FixedPriceMarket


class Action(enum.Enum):
    NONE = "none"
    BUY = "buy"
    SELL = "sell"


def stabilizer_action(price: float, target: float, band_pct: float) -> Action:
    """BUY below target × (1 − band), SELL above target × (1 + band), else NONE."""
    if price < target * (100 - band_pct) / 100:
        return Action.BUY
    if price > target * (100 + band_pct) / 100:
        return Action.SELL
    return Action.NONE


@dataclass
class StabilityFund:
    """What the stabilizer holds: credits to sell (µcredits) and dollars to buy with (µUSD)."""

    credits: int
    usd: int

    def stabilize(self, pool: Pool, target: float, band_pct: float, trade_pct: float) -> Action:
        """Trade `trade_pct` of the fund against `pool` if its price is outside the band."""
        action = stabilizer_action(pool.price_usd, target, band_pct)
        if action is Action.BUY:
            usd = int(self.usd * trade_pct / 100)
            self.usd -= usd
            self.credits += pool.spend(usd)
        elif action is Action.SELL:
            credits = int(self.credits * trade_pct / 100)
            self.credits -= credits
            self.usd += pool.sell(credits)
        return action
