"""The founding document's five-year projection, replayed and unpacked."""

from __future__ import annotations

import random

import pytest

from p2pinfer.sim import projection as J
from p2pinfer.sim.engine import simulate


def test_the_document_table_is_self_consistent() -> None:
    for row in J.DOCUMENT:
        assert row.providers * row.avg_revenue_usd == row.total_revenue_usd


def test_the_simulator_under_the_documents_assumptions_reproduces_its_table() -> None:
    params = J.document_params()
    rows = simulate(params, 5 * 365, random.Random(1))
    for y, doc in enumerate(J.DOCUMENT):
        year = rows[y * 365:(y + 1) * 365]
        # Exactly: revenue in micro-credits is the document's dollars at $1 a credit.
        assert sum(r.revenue_ucr for r in year) == int(doc.total_revenue_usd) * 1_000_000
        assert {r.providers for r in year} == {int(doc.providers)}
    for got, doc in zip(J.yearly(rows), J.DOCUMENT, strict=True):
        assert got.year == doc.year
        assert got.providers == doc.providers
        assert got.total_revenue_usd == pytest.approx(doc.total_revenue_usd, rel=1e-12)
        assert got.avg_revenue_usd == pytest.approx(doc.avg_revenue_usd, rel=1e-12)


def test_what_the_table_implies() -> None:
    imp = J.implied()
    assert [r.requests_per_year for r in imp] == [
        500_000_000, 3_750_000_000, 15_000_000_000, 48_000_000_000, 150_000_000_000]
    assert imp[0].requests_per_provider_day == pytest.approx(1_369.86, abs=0.01)
    assert imp[-1].requests_per_provider_day == pytest.approx(4_109.59, abs=0.01)
    # A 7B provider at 20 tokens/s, online 80% of the day, serves 1.3824M tokens a day:
    # year 1 needs 99% of it, year 5 297% - more than the hardware can do.
    seven_b = dict(imp[0].utilisation_pct)["7b-q4"]
    assert seven_b == pytest.approx(1_369_863.01 / 1_382_400 * 100, rel=1e-6)
    assert dict(imp[-1].utilisation_pct)["7b-q4"] > 100
    # 100,000 providers at the seed's 10,000-credit minimum stake lock the whole 1B supply.
    assert imp[-1].staked_credits == 1_000_000_000
    assert all(r.consumer_usd_per_m == 1.0 for r in imp)


def test_provider_economics_at_the_documents_revenue() -> None:
    rows = {(r.year, r.profile): r for r in J.economics()}
    y1 = rows[(1, "7b-q4")]
    assert y1.take_usd == 300  # 60% of $500
    assert y1.depreciation_usd == pytest.approx(100)  # $300 over 3 years
    # 120 W × 99% load × 80% online × 24 h × 365 d × $0.15/kWh
    assert y1.electricity_usd == pytest.approx(120 * 0.9909 * 0.8 * 24 * 365 / 1000 * 0.15,
                                               rel=1e-3)
    assert y1.stake_capital_usd == 1_000  # 10% a year on 10,000 credits at $1
    assert y1.profit_usd < 0 < y1.profit_usd + y1.stake_capital_usd


def test_with_capacity_the_simulator_falls_short_of_the_document() -> None:
    name, _, params = J.stage_params()[1]
    assert name == "capacity"
    rows = simulate(params, 365, random.Random(1))
    revenue = sum(r.revenue_usd for r in rows)
    assert revenue < J.DOCUMENT[0].total_revenue_usd * 0.9
    assert max(r.utilisation_pct or 0 for r in rows) == pytest.approx(100)


def test_a_million_tokens_costs_a_7b_provider_more_in_power_than_the_cloud_charges() -> None:
    row = next(r for r in J.unit_costs() if r.profile == "7b-q4")
    assert row.tokens_per_day == 20 * 86_400 * 0.8
    # 120 W for the 50,000 s a million tokens take at 20 tokens/s: 1.67 kWh at $0.15.
    assert row.electricity == pytest.approx(120 * 1e6 / 20 / 3.6e6 * 0.15)
    assert row.electricity > row.cloud
    total = row.electricity + row.depreciation + row.stake_capital
    assert row.break_even == pytest.approx(total / 0.6)
