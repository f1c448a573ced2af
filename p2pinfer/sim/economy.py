"""Where the credits are: every account outside the providers, the token market, the
stabilizer, and the day's money movements (charges, emission, staking rewards, sales).

All amounts are integer micro-credits and every movement takes from one account
what it adds to another (or mints or burns it, counted in `minted`/`burned`), so
`minted == held(providers) + burned` is an identity the simulator checks daily.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from p2pinfer.market.split import split
from p2pinfer.protocol import charge_for
from p2pinfer.sim import agents as A
from p2pinfer.sim import amm
from p2pinfer.sim.params import MICRO, SimParams


class ConservationError(AssertionError):
    """minted ≠ held + burned: a bug in the simulator, never a user error."""


@dataclass
class Accounts:
    """Every credit not held by a provider or the market, and the mint/burn totals (µcredits)."""

    minted: int
    burned: int
    reserve: int
    holders: int
    treasury: int = 0
    validators: int = 0
    stakers: int = 0


@dataclass(frozen=True)
class Settlement:
    """A day's charges: tokens actually served, each provider's pay, revenue."""

    served: A.I64
    paid: A.I64
    revenue: int
    revenue_usd: float


class Economy:
    """The accounts, the market and the stability fund of one simulation."""

    def __init__(self, params: SimParams, launch_stakes: int) -> None:
        self.p = params
        tok, st = params.token, params.stabilizer
        fund_credits = st.fund_credits * MICRO if st.enabled else 0
        self.acc = Accounts(
            minted=tok.total_supply_credits * MICRO, burned=0,
            reserve=(tok.total_supply_credits - tok.circulating_credits) * MICRO - fund_credits,
            holders=(tok.circulating_credits - tok.pool_credits) * MICRO - launch_stakes,
        )
        if self.acc.holders < 0:
            raise ValueError("launch stakes exceed circulating credits")
        self.genesis = self.acc.minted
        pool = tok.pool_credits * MICRO
        self.market: amm.Market = (
            amm.FixedPriceMarket(pool, tok.initial_price_usd) if tok.fixed_price
            else amm.Pool(pool, round(pool * tok.initial_price_usd)))
        self.fund = amm.StabilityFund(fund_credits, round(st.fund_usd * MICRO)) \
            if st.enabled else None
        self.target_price = st.target_price_usd or tok.initial_price_usd

    def held(self, pop: A.Providers) -> int:
        """Every credit held by anyone (µcredits): minted − burned, if nothing leaked."""
        a = self.acc
        fund = self.fund.credits if self.fund is not None else 0
        return (a.reserve + a.holders + a.treasury + a.validators + a.stakers + fund
                + self.market.credits + int(pop.balance.sum()) + int(pop.stake.sum()))

    def check(self, pop: A.Providers, day: int) -> int:
        """held(pop), or ConservationError if minted ≠ held + burned."""
        held = self.held(pop)
        if self.acc.minted != held + self.acc.burned:
            raise ConservationError(f"day {day}: minted {self.acc.minted} != held {held}"
                                    f" + burned {self.acc.burned}")
        return held

    def settle(self, pop: A.Providers, prices: A.I64, served: A.I64,
               quality: A.I64) -> Settlement:
        """Charge consumers one charge per (class, quality) group (protocol.charge_for) and
        split it (split.split at that quality); providers share their group's part by tokens.

        Consumers buy the credits they pay with from the market; what it cannot sell
        today (more than `max_buy`) is demand left unserved.
        """
        acc = self.acc
        key = pop.profile * 1001 + quality
        # Few distinct keys (classes × quality levels): count them instead of sorting.
        uniq = np.flatnonzero(np.bincount(key, minlength=1)).tolist()
        groups = [np.flatnonzero(key == u) for u in uniq]
        for _ in range(8):
            tokens = [int(served[g].sum()) for g in groups]
            charges = [charge_for(int(prices[u // 1001]), t)
                       for u, t in zip(uniq, tokens, strict=True)]
            total, limit = sum(charges), self.market.max_buy()
            if total <= limit:
                break
            served = served * limit // (total + total // 10 + 1)
        else:  # pragma: no cover - the loop shrinks demand below any positive limit
            raise ConservationError("could not fit the day's charges into the market")
        revenue_usd = self.market.buy(total) / MICRO
        paid = np.zeros(len(pop), np.int64)
        for u, g, charge in zip(uniq, groups, charges, strict=True):
            parts = split(charge, self.p.split, u % 1001)
            paid[g] = A.apportion_exact(parts.providers, served[g])
            acc.validators += parts.validators
            acc.stakers += parts.stakers
            acc.treasury += parts.treasury
            acc.burned += parts.burn
        return Settlement(served, paid, total, revenue_usd)

    def emit(self, weights: A.I64, day: int) -> A.I64:
        """Mint the day's emission and share it by `weights` (quality-weighted tokens)."""
        tok = self.p.token
        amount = tok.emission_credits_per_day * MICRO
        if tok.emission_halving_days:
            amount >>= min(day // tok.emission_halving_days, 62)
        if amount <= 0 or int(weights.sum()) <= 0:
            return np.zeros(weights.shape[0], np.int64)
        self.acc.minted += amount
        return A.apportion_exact(amount, weights)

    def pay_stakers(self, stakes: A.I64) -> A.I64:
        """Empty the stakers' pool to the providers, by stake."""
        pool = self.acc.stakers
        if pool <= 0 or int(stakes.sum()) <= 0:
            return np.zeros(stakes.shape[0], np.int64)
        self.acc.stakers = 0
        return A.apportion_exact(pool, stakes)

    def burn_stake(self, pop: A.Providers, row: int, amount: int) -> None:
        """Burn `amount` of a provider's stake (a slash)."""
        pop.stake[row] -= amount
        self.acc.burned += amount

    def sell(self, pop: A.Providers) -> None:
        """Providers sell their share of their balance, validators all of theirs, the
        treasury its share."""
        acc, tok = self.acc, self.p.token
        sold = pop.balance * round(tok.provider_sell_fraction * MICRO) // MICRO
        pop.balance -= sold
        treasury = acc.treasury * round(tok.treasury_sell_fraction * MICRO) // MICRO
        acc.treasury -= treasury
        total = int(sold.sum()) + acc.validators + treasury
        acc.validators = 0
        self.market.sell(total)

    def speculate(self, gen: np.random.Generator) -> None:
        """Holders buy or sell a normal random share of the pool's dollars."""
        sigma = self.p.token.speculation_noise
        if not isinstance(self.market, amm.Pool) or sigma <= 0:
            return
        usd = float(gen.normal(0, sigma)) * self.market.usd
        if usd > 0:
            self.acc.holders += self.market.spend(int(usd))
        else:
            credits = min(self.acc.holders, int(-usd / self.market.price_usd))
            self.acc.holders -= credits
            self.market.sell(credits)

    def stabilize(self) -> amm.Action:
        """The stability fund's move today (NONE if off or the price is fixed)."""
        if self.fund is None or not isinstance(self.market, amm.Pool):
            return amm.Action.NONE
        st = self.p.stabilizer
        return self.fund.stabilize(self.market, self.target_price, st.band_pct, st.trade_pct)


__all__ = ["Accounts", "ConservationError", "Economy", "Settlement"]
