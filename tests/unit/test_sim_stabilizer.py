"""The token market pool and the founding document's price stabilizer."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pinfer.sim.amm import Action, Pool, StabilityFund, stabilizer_action
from p2pinfer.sim.engine import simulate
from p2pinfer.sim.params import preset_params

M = 1_000_000


@pytest.mark.parametrize(
    ("price", "expected"),
    [(0.10, Action.NONE), (0.0901, Action.NONE), (0.1099, Action.NONE), (0.09, Action.NONE),
     (0.11, Action.NONE), (0.0899, Action.BUY), (0.05, Action.BUY), (0.1101, Action.SELL),
     (0.5, Action.SELL)],
)
def test_the_stabilizer_acts_only_outside_the_10_percent_band(price: float,
                                                              expected: Action) -> None:
    assert stabilizer_action(price, 0.10, 10) is expected


def pool_at(price: float) -> Pool:
    return Pool(10_000_000 * M, round(10_000_000 * M * price))


def test_inside_the_band_the_fund_does_not_trade() -> None:
    fund, pool = StabilityFund(1_000 * M, 1_000 * M), pool_at(0.105)
    before = (fund.credits, fund.usd, pool.credits, pool.usd)
    assert fund.stabilize(pool, 0.10, 10, 10) is Action.NONE
    assert (fund.credits, fund.usd, pool.credits, pool.usd) == before


def test_below_the_band_it_buys_with_10_percent_of_its_dollars() -> None:
    fund, pool = StabilityFund(1_000 * M, 1_000 * M), pool_at(0.08)
    price = pool.price_usd
    assert fund.stabilize(pool, 0.10, 10, 10) is Action.BUY
    assert fund.usd == 900 * M
    assert fund.credits > 1_000 * M
    assert pool.price_usd > price


def test_above_the_band_it_sells_10_percent_of_its_credits() -> None:
    fund, pool = StabilityFund(1_000 * M, 1_000 * M), pool_at(0.12)
    price = pool.price_usd
    assert fund.stabilize(pool, 0.10, 10, 10) is Action.SELL
    assert fund.credits == 900 * M
    assert fund.usd > 1_000 * M
    assert pool.price_usd < price


@given(credits=st.integers(1, 10**9), usd=st.integers(1, 10**9), trade=st.integers(0, 10**9))
def test_pool_trades_never_shrink_k_and_move_every_credit(credits: int, usd: int,
                                                          trade: int) -> None:
    pool = Pool(credits * 1000, usd * 1000)
    k = pool.credits * pool.usd
    total = pool.credits
    pool.sell(trade)
    assert pool.credits == total + trade and pool.credits * pool.usd >= k
    k = pool.credits * pool.usd
    got = pool.spend(trade)
    assert pool.credits == total + trade - got and pool.credits * pool.usd >= k
    k = pool.credits * pool.usd
    out = min(trade, pool.credits - 1)
    paid = pool.buy(out)
    assert paid >= 0 and pool.credits * pool.usd >= k


def test_in_a_run_the_stabilizer_acts_exactly_on_days_outside_the_band() -> None:
    params = preset_params("bme")
    params = replace(params,
                     network=replace(params.network, initial_providers=150),
                     token=replace(params.token, speculation_noise=0.05),
                     stabilizer=replace(params.stabilizer, enabled=True))
    rows = simulate(params, 120, random.Random(9))
    target = params.token.initial_price_usd
    acted = 0
    for r in rows:
        assert r.stabilizer == stabilizer_action(r.market_price_usd, target, 10).value
        acted += r.stabilizer != "none"
    assert 0 < acted < len(rows)
    off = simulate(replace(params, stabilizer=replace(params.stabilizer, enabled=False)), 120,
                   random.Random(9))
    assert all(r.stabilizer == "none" for r in off)
