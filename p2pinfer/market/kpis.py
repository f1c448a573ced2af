"""Sustainability KPIs: the founding document's formulas, for the simulator and for a node.

The document's dashboard: utilisation = active compute / available compute;
revenue growth = (current − previous) / previous; network value = staked ×
token price + utility value; provider retention (monthly churn) and quality
scores. The simulator fills `DayKPIs` each day with these functions; a node
calls `ledger_kpis` on its own ledger entries and catalog counts (no network
needed), so live and simulated numbers mean the same thing.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from p2pinfer.market.entries import ChargeBody, Entry
from p2pinfer.market.pricing import MICRO_PER_CREDIT

DAY_MS = 86_400_000
#: The window over which a node's live KPIs are computed: the document's "monthly".
DEFAULT_WINDOW_MS = 30 * DAY_MS


def utilisation_pct(used: float, available: float) -> float | None:
    """The document's utilizationRate: used / available × 100 (None when nothing is available)."""
    return None if available <= 0 else used / available * 100


def revenue_growth_pct(current: float, previous: float) -> float | None:
    """The document's revenueGrowth: (current − previous) / previous × 100 (None if no previous)."""
    return None if previous <= 0 else (current - previous) / previous * 100


def retention_pct(before: int, retained: int) -> float | None:
    """Share of the `before` providers present a month ago that are still present (`retained`),
    the complement of the document's monthly churn rate (None if there were none)."""
    return None if before <= 0 else retained / before * 100


def price_volatility_pct(prices: Sequence[float]) -> float | None:
    """The document's "price stability": standard deviation of daily log returns, in % (None
    with fewer than three prices)."""
    if len(prices) < 3 or min(prices) <= 0:
        return None
    returns = [math.log(b / a) for a, b in itertools.pairwise(prices)]
    mean = sum(returns) / len(returns)
    return math.sqrt(sum((r - mean) ** 2 for r in returns) / (len(returns) - 1)) * 100


def network_value_usd(staked_credits: float, token_price_usd: float, utility_usd: float) -> float:
    """The document's networkValue: staked × token price + utility value."""
    return staked_credits * token_price_usd + utility_usd


def credits_text(micro: int) -> str:
    """Micro-credits as an exact decimal number of credits."""
    whole, frac = divmod(abs(micro), MICRO_PER_CREDIT)
    return f"{'-' if micro < 0 else ''}{whole}.{frac:06d}"


@dataclass(frozen=True)
class DayKPIs:
    """One simulated day. Fields ending in `_ucr` are integer micro-credits."""

    day: int
    providers: int
    joined: int
    left: int
    caught_cheaters: int
    slashed_honest: int
    retention_30d_pct: float | None
    utilisation_pct: float | None
    demand_tokens: int
    served_tokens: int
    checks: int
    check_failures: int
    #: Token-weighted mean price, micro-credits per 1k tokens, and in USD per million tokens.
    price_per_1k_micro: float
    price_usd_per_m: float
    revenue_ucr: int
    revenue_usd: float
    revenue_growth_30d_pct: float | None
    #: Mean per provider, USD a day.
    provider_earnings_usd: float
    provider_costs_usd: float
    profitable_pct: float | None
    mean_quality_pm: float | None
    burned_ucr: int
    emitted_ucr: int
    emitted_total_ucr: int
    minted_total_ucr: int
    burned_total_ucr: int
    held_ucr: int
    supply_ucr: int
    circulating_ucr: int
    staked_ucr: int
    treasury_ucr: int
    #: The token's price after the day's trades, before the stabilizer acted.
    market_price_usd: float
    #: ... and after (the day's closing price).
    token_price_usd: float
    #: Volatility of the closing price over the last 30 days (price_volatility_pct).
    price_volatility_30d_pct: float | None
    network_value_usd: float
    #: What the stabilizer did: none, buy or sell.
    stabilizer: str


CSV_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(DayKPIs))


def _cell(name: str, value: object) -> str:
    if value is None:
        return ""
    if name.endswith("_ucr") and isinstance(value, int):
        return credits_text(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def csv_header() -> list[str]:
    """Column names: `_ucr` fields are written in credits and named `_credits`."""
    return [n[: -len("_ucr")] + "_credits" if n.endswith("_ucr") else n for n in CSV_FIELDS]


def write_csv(rows: Sequence[DayKPIs], path: Path) -> None:
    """Write one line per day; the same rows always give the same bytes."""
    with path.open("w", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(csv_header())
        for row in rows:
            out.writerow([_cell(n, getattr(row, n)) for n in CSV_FIELDS])


# -- live KPIs from a node's ledger ------------------------------------------------------------


@dataclass(frozen=True)
class CatalogCounts:
    """What a node's provider catalog says now."""

    #: Providers advertising at least one model.
    providers: int
    #: Sum of their advertised generation speeds, tokens per second.
    capacity_tokens_per_s: int


@dataclass(frozen=True)
class LiveKPIs:
    """A node's KPIs over the last `window_ms` (and the window before it, for growth).

    From one node's ledger: what it paid or was paid, not the whole network's.
    """

    window_ms: int
    jobs: int
    tokens: int
    revenue_ucr: int
    previous_revenue_ucr: int
    revenue_growth_pct: float | None
    burned_ucr: int
    provider_earnings_ucr: int
    providers_paid: int
    retention_pct: float | None
    mean_quality_pm: float | None
    utilisation_pct: float | None
    catalog_providers: int


def ledger_kpis(
    entries: Iterable[Entry], catalog: CatalogCounts, now_ms: int,
    window_ms: int = DEFAULT_WINDOW_MS,
) -> LiveKPIs:
    """KPIs from ledger charges in (now − window, now] and the window before it.

    Utilisation compares the tokens charged with what the catalog's providers
    could have generated in the window; retention is the share of providers
    paid in the previous window that were paid again in this one.
    """
    start, prev_start = now_ms - window_ms, now_ms - 2 * window_ms
    cur: list[ChargeBody] = []
    prev_revenue = 0
    prev_providers: set[bytes] = set()
    for entry in entries:
        body = entry.body
        if not isinstance(body, ChargeBody) or entry.at_ms > now_ms:
            continue
        if entry.at_ms > start:
            cur.append(body)
        elif entry.at_ms > prev_start:
            prev_revenue += body.amount
            prev_providers.add(body.provider)
    revenue = sum(b.amount for b in cur)
    tokens = sum(b.tokens for b in cur)
    providers = {b.provider for b in cur}
    return LiveKPIs(
        window_ms=window_ms,
        jobs=len(cur),
        tokens=tokens,
        revenue_ucr=revenue,
        previous_revenue_ucr=prev_revenue,
        revenue_growth_pct=revenue_growth_pct(revenue, prev_revenue),
        burned_ucr=sum(b.split.burn for b in cur),
        provider_earnings_ucr=sum(b.split.providers for b in cur),
        providers_paid=len(providers),
        retention_pct=retention_pct(len(prev_providers), len(prev_providers & providers)),
        mean_quality_pm=sum(b.quality_pm for b in cur) / len(cur) if cur else None,
        utilisation_pct=utilisation_pct(tokens, catalog.capacity_tokens_per_s * window_ms / 1000),
        catalog_providers=catalog.providers,
    )
