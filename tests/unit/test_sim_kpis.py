"""KPI formulas, and live KPIs computed from a real SQLite ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pinfer.market.kpis import (
    DAY_MS,
    CatalogCounts,
    ledger_kpis,
    network_value_usd,
    retention_pct,
    revenue_growth_pct,
    utilisation_pct,
)
from p2pinfer.market.ledger import Ledger
from p2pinfer.market.split import BME, SEED
from tests.market_support import charge_input, fixed_identity


def test_the_documents_formulas() -> None:
    assert utilisation_pct(30, 120) == 25
    assert utilisation_pct(1, 0) is None
    assert revenue_growth_pct(150, 100) == 50
    assert revenue_growth_pct(50, 100) == -50
    assert revenue_growth_pct(10, 0) is None
    assert network_value_usd(1_000, 0.5, 200) == 700
    assert retention_pct(40, 30) == 75
    assert retention_pct(0, 0) is None


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_live_kpis_from_a_real_ledger(tmp_path: Path) -> None:
    me, p1, p2, p3 = (fixed_identity(n) for n in (1, 2, 3, 4))
    start = 1_700_000_000_000
    clock = Clock(start)
    with Ledger.open(tmp_path / "ledger.sqlite3", me, clock=clock) as led:
        led.record_faucet(me.public_key, 10**9)
        # Previous window (days 0..29): p1 and p2 paid, 3,000 µcredits in all.
        clock.ms = start + 5 * DAY_MS
        led.record_charge(charge_input(1, p1, me, 1_000), SEED, quality_pm=1000)
        led.record_charge(charge_input(2, p2, me, 2_000), SEED, quality_pm=1000)
        # This window (days 30..59): p1 again, and p3 new; 4,500 µcredits, 2,000 tokens.
        clock.ms = start + 40 * DAY_MS
        led.record_charge(charge_input(3, p1, me, 4_000, tokens=1_500), SEED, quality_pm=960)
        led.record_charge(charge_input(4, p3, me, 500, tokens=500), BME, quality_pm=1000)
        entries = led.entries()
    now = start + 59 * DAY_MS
    k = ledger_kpis(entries, CatalogCounts(providers=3, capacity_tokens_per_s=10), now)
    assert (k.jobs, k.tokens, k.revenue_ucr, k.previous_revenue_ucr) == (2, 2_000, 4_500, 3_000)
    assert k.revenue_growth_pct == pytest.approx(50.0)
    # seed: 4,000 → providers 2,400 × 0.96 = 2,304, burn 600 + 96; bme: 500 → 125, burn 250.
    assert k.provider_earnings_ucr == 2_304 + 125
    assert k.burned_ucr == 696 + 250
    assert k.providers_paid == 2
    assert k.retention_pct == pytest.approx(50.0)  # p1 stayed, p2 did not
    assert k.mean_quality_pm == pytest.approx(980.0)
    assert k.utilisation_pct == pytest.approx(2_000 / (10 * 30 * 86_400) * 100)
    assert k.catalog_providers == 3


def test_live_kpis_of_an_empty_ledger(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.sqlite3", fixed_identity(1)) as led:
        k = ledger_kpis(led.entries(), CatalogCounts(0, 0), now_ms=10**13)
    assert (k.jobs, k.revenue_ucr, k.revenue_growth_pct, k.retention_pct) == (0, 0, None, None)
    assert k.mean_quality_pm is None and k.utilisation_pct is None
