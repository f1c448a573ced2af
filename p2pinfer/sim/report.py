"""Summaries of runs and the tables the CLI and docs/tokenomics.md show.

A table is a title, column names and rows of strings, so the CLI can render
it with rich and `--markdown` can print it for the docs from the same code.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from p2pinfer.market.kpis import DayKPIs
from p2pinfer.sim import projection as J

MICRO = 1_000_000


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def markdown(self) -> str:
        """The table as GitHub markdown, numbers right-aligned."""
        align = ["---" if i == 0 else "---:" for i in range(len(self.columns))]
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |",
                 "| " + " | ".join(align) + " |"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="") as fh:
            out = csv.writer(fh, lineterminator="\n")
            out.writerow(self.columns)
            out.writerows(self.rows)


def _num(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def _usd(x: float) -> str:
    """Dollars with a sensible precision for the magnitude."""
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:,.2f}"
    return f"{x:,.3f}"


@dataclass(frozen=True)
class RunSummary:
    """What a run comes to, over its last 30 days unless said otherwise."""

    name: str
    days: int
    providers_start: int
    providers_end: int
    retention_pct: float | None
    utilisation_pct: float | None
    revenue_usd_per_day: float
    revenue_total_usd: float
    earnings_usd: float
    costs_usd: float
    profitable_pct: float | None
    quality_pm: float | None
    caught_cheaters: int
    slashed_honest: int
    burned_total_credits: float
    emitted_total_credits: float
    supply_change_pct: float
    token_price_start: float
    token_price_end: float
    #: Mean over the run of the 30-day volatility of daily returns, %.
    price_volatility_pct: float | None
    usd_per_m_tokens: float


def _mean(values: Sequence[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def summarise(name: str, rows: Sequence[DayKPIs]) -> RunSummary:
    """The summary of one run (needs at least one day)."""
    last = rows[-30:]
    first_supply = rows[0].supply_ucr + rows[0].burned_ucr - rows[0].emitted_ucr
    return RunSummary(
        name=name, days=len(rows), providers_start=rows[0].providers,
        providers_end=rows[-1].providers + rows[-1].joined - rows[-1].left,
        retention_pct=rows[-1].retention_30d_pct,
        utilisation_pct=_mean([r.utilisation_pct for r in last]),
        revenue_usd_per_day=sum(r.revenue_usd for r in last) / len(last),
        revenue_total_usd=sum(r.revenue_usd for r in rows),
        earnings_usd=sum(r.provider_earnings_usd for r in last) / len(last),
        costs_usd=sum(r.provider_costs_usd for r in last) / len(last),
        profitable_pct=_mean([r.profitable_pct for r in last]),
        quality_pm=_mean([r.mean_quality_pm for r in last]),
        caught_cheaters=sum(r.caught_cheaters for r in rows),
        slashed_honest=sum(r.slashed_honest for r in rows),
        burned_total_credits=rows[-1].burned_total_ucr / MICRO,
        emitted_total_credits=sum(r.emitted_ucr for r in rows) / MICRO,
        supply_change_pct=(rows[-1].supply_ucr - first_supply) / first_supply * 100,
        token_price_start=rows[0].token_price_usd, token_price_end=rows[-1].token_price_usd,
        price_volatility_pct=_mean([r.price_volatility_30d_pct for r in rows]),
        usd_per_m_tokens=sum(r.price_usd_per_m for r in last) / len(last),
    )


def mean_summary(summaries: Sequence[RunSummary]) -> RunSummary:
    """Field-by-field mean of runs of one economy under several seeds (counts rounded)."""
    values: dict[str, object] = {}
    for f in dataclasses.fields(RunSummary):
        xs = [getattr(s, f.name) for s in summaries]
        if f.name == "name":
            values[f.name] = xs[0]
        elif all(isinstance(x, int) for x in xs):
            values[f.name] = round(sum(xs) / len(xs))
        else:
            values[f.name] = _mean(xs)
    return RunSummary(**values)  # type: ignore[arg-type]


def summary_table(summaries: Sequence[RunSummary], title: str) -> Table:
    """Runs side by side, one column each."""
    fields: list[tuple[str, list[str]]] = [
        ("providers (start → end)", [f"{s.providers_start:,} → {s.providers_end:,}"
                                     for s in summaries]),
        ("30-day retention %", [_num(s.retention_pct, 1) for s in summaries]),
        ("utilisation % (last 30 d)", [_num(s.utilisation_pct, 1) for s in summaries]),
        ("revenue USD/day (last 30 d)", [_usd(s.revenue_usd_per_day) for s in summaries]),
        ("revenue USD (whole run)", [_usd(s.revenue_total_usd) for s in summaries]),
        ("provider earnings USD/day", [_usd(s.earnings_usd) for s in summaries]),
        ("provider costs USD/day", [_usd(s.costs_usd) for s in summaries]),
        ("profitable providers %", [_num(s.profitable_pct, 1) for s in summaries]),
        ("mean quality ‰", [_num(s.quality_pm, 1) for s in summaries]),
        ("cheaters caught / honest slashed", [f"{s.caught_cheaters} / {s.slashed_honest}"
                                              for s in summaries]),
        ("burned credits", [_num(s.burned_total_credits) for s in summaries]),
        ("emitted credits", [_num(s.emitted_total_credits) for s in summaries]),
        ("total supply change %", [_num(s.supply_change_pct, 3) for s in summaries]),
        ("token price USD (start → end)", [f"{s.token_price_start:.3f} → {s.token_price_end:.3f}"
                                           for s in summaries]),
        ("price volatility % a day", [_num(s.price_volatility_pct, 2) for s in summaries]),
        ("inference USD / M tokens", [_usd(s.usd_per_m_tokens) for s in summaries]),
    ]
    return Table(title, ("", *(s.name for s in summaries)),
                 tuple((name, *values) for name, values in fields))


def document_table(rows: Sequence[J.YearRow], title: str) -> Table:
    return Table(title, ("year", "providers", "revenue / provider USD", "total revenue USD"),
                 tuple((str(r.year), _num(r.providers), _num(r.avg_revenue_usd, 2),
                        _num(r.total_revenue_usd, 2)) for r in rows))


def implied_table(rows: Sequence[J.ImpliedRow]) -> Table:
    profiles = [name for name, _ in rows[0].utilisation_pct]
    return Table(
        "What the table needs at the base rate (0.001 credit a 1k-token request, $1 a credit)",
        ("year", "requests / year", "requests / provider / day",
         *(f"load {p} %" for p in profiles), "fleet load %", "credit price for $ at half load",
         "stake locked (credits)"),
        tuple((str(r.year), _num(r.requests_per_year), _num(r.requests_per_provider_day),
               *(_num(u) for _, u in r.utilisation_pct), _num(r.fleet_utilisation_pct),
               f"${r.price_needed_at_half_load_usd:.2f}", _num(r.staked_credits))
              for r in rows))


def economics_table(rows: Sequence[J.EconomicsRow]) -> Table:
    return Table(
        "A provider's year: its 60% take vs costs (load capped at 100%, $1 a credit)",
        ("year", "profile", "take USD", "electricity USD", "depreciation USD",
         "stake capital USD", "profit USD", "profit w/o stake USD"),
        tuple((str(r.year), r.profile, _usd(r.take_usd), _usd(r.electricity_usd),
               _usd(r.depreciation_usd), _usd(r.stake_capital_usd), _usd(r.profit_usd),
               _usd(r.profit_usd + r.stake_capital_usd)) for r in rows))


def stages_table(stages: Sequence[J.Stage]) -> Table:
    rows = []
    for i, doc in enumerate(J.DOCUMENT):
        cells = [str(doc.year), f"{_num(doc.providers)} / {_usd(doc.total_revenue_usd)}"]
        for st in stages:
            y = st.years[i] if i < len(st.years) else None
            cells.append("-" if y is None else
                         f"{_num(y.providers)} / {_usd(y.total_revenue_usd)}")
        rows.append(tuple(cells))
    return Table("Providers (mean) / total revenue USD by year: the document vs each stage",
                 ("year", "document", *(s.name for s in stages)), tuple(rows))


def unit_cost_table(rows: Sequence[J.UnitCostRow], price_usd: float, share_pct: float) -> Table:
    return Table(
        f"A million tokens at full load, USD (stake at ${price_usd:.2f} a credit; break-even: "
        f"costs / the providers' {share_pct:.0f}% share)",
        ("profile", "tokens / day", "electricity", "depreciation", "stake capital", "total",
         "cloud price", "break-even price"),
        tuple((r.profile, _num(r.tokens_per_day), f"{r.electricity:.3f}",
               f"{r.depreciation:.3f}", f"{r.stake_capital:.3f}",
               f"{r.electricity + r.depreciation + r.stake_capital:.3f}", f"{r.cloud:.2f}",
               f"{r.break_even:.2f}") for r in rows))
