"""PNG plots of simulated KPIs (matplotlib, Agg backend: no display needed).

matplotlib is imported inside the functions so that `p2pinfer` commands
that draw nothing do not pay for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from p2pinfer.market.kpis import DayKPIs
from p2pinfer.sim.projection import DOCUMENT, Stage

Series = Callable[[DayKPIs], float | None]
MICRO = 1_000_000


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _rolling(values: Sequence[float | None], days: int = 7) -> list[float | None]:
    """Trailing mean over `days` (None where the window has no value)."""
    out: list[float | None] = []
    for i in range(len(values)):
        window = [v for v in values[max(0, i - days + 1):i + 1] if v is not None]
        out.append(sum(window) / len(window) if window else None)
    return out


#: (title, y label, [(legend, series, smoothed)])
PANELS: dict[str, list[tuple[str, str, list[tuple[str, Series, bool]]]]] = {
    "network": [
        ("Providers", "providers", [("active", lambda r: r.providers, False)]),
        ("Utilisation", "%", [("utilisation", lambda r: r.utilisation_pct, True)]),
        ("30-day retention", "%", [("retention", lambda r: r.retention_30d_pct, False)]),
        ("Mean quality score", "per mille", [("quality", lambda r: r.mean_quality_pm, True)]),
    ],
    "economics": [
        ("Revenue (7-day mean)", "USD / day", [("revenue", lambda r: r.revenue_usd, True)]),
        ("Provider earnings vs costs (7-day mean)", "USD / provider / day", [
            ("earnings", lambda r: r.provider_earnings_usd, True),
            ("costs", lambda r: r.provider_costs_usd, True)]),
        ("Price of inference", "USD / M tokens", [
            ("network", lambda r: r.price_usd_per_m, True)]),
        ("Profitable providers", "%", [("profitable", lambda r: r.profitable_pct, False)]),
    ],
    "token": [
        ("Token price", "USD / credit", [("price", lambda r: r.token_price_usd, False)]),
        ("Net supply change since launch (emitted − burned)", "M credits", [
            ("net", lambda r: (r.emitted_total_ucr - r.burned_total_ucr) / MICRO / 1e6, False)]),
        ("Burned and emitted (cumulative)", "M credits", [
            ("burned", lambda r: r.burned_total_ucr / MICRO / 1e6, False),
            ("emitted", lambda r: r.emitted_total_ucr / MICRO / 1e6, False)]),
        ("Staked", "M credits", [("staked", lambda r: r.staked_ucr / MICRO / 1e6, False)]),
    ],
}


def _draw(ax: Any, title: str, ylabel: str, runs: Mapping[str, Sequence[DayKPIs]],
          lines: list[tuple[str, Series, bool]]) -> None:
    for run, rows in runs.items():
        days = [r.day for r in rows]
        for legend, series, smooth in lines:
            values = [series(r) for r in rows]
            ys = _rolling(values) if smooth else values
            label = legend if len(runs) == 1 else f"{run}" if len(lines) == 1 else \
                f"{run} {legend}"
            ax.plot(days, [float("nan") if y is None else y for y in ys], label=label,
                    linewidth=1.2)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("day")
    ax.grid(alpha=0.3)
    if len(lines) > 1 or len(runs) > 1:
        ax.legend(fontsize=8)


def plot_run(rows: Sequence[DayKPIs], out_dir: Path, title: str) -> list[Path]:
    """network.png, economics.png and token.png for one run; returns their paths."""
    plt = _pyplot()
    paths = []
    for name, panels in PANELS.items():
        fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
        for ax, (panel_title, ylabel, lines) in zip(axes.flat, panels, strict=True):
            _draw(ax, panel_title, ylabel, {title: rows}, lines)
        fig.suptitle(f"{title}: {name}")
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


COMPARE_PANELS: list[tuple[str, str, list[tuple[str, Series, bool]]]] = [
    PANELS["network"][0], PANELS["network"][1], PANELS["economics"][0],
    ("Provider profit (7-day mean)", "USD / provider / day",
     [("profit", lambda r: r.provider_earnings_usd - r.provider_costs_usd, True)]),
    PANELS["token"][0], PANELS["token"][1],
]


def plot_compare(runs: Mapping[str, Sequence[DayKPIs]], path: Path, title: str) -> Path:
    """One PNG with a line per run in six panels."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5), constrained_layout=True)
    for ax, (panel_title, ylabel, lines) in zip(axes.flat, COMPARE_PANELS, strict=True):
        _draw(ax, panel_title, ylabel, runs, lines)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_projection(stages: Sequence[Stage], path: Path) -> Path:
    """Providers, revenue per provider and total revenue by year: the document vs each stage."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), constrained_layout=True)
    years = [r.year for r in DOCUMENT]
    panels: list[tuple[str, str, Callable[[Any], float]]] = [
        ("Providers (mean over the year)", "providers", lambda r: r.providers),
        ("Revenue per provider", "USD / year", lambda r: r.avg_revenue_usd),
        ("Total revenue", "USD / year", lambda r: r.total_revenue_usd),
    ]
    for ax, (title, ylabel, get) in zip(axes.flat, panels, strict=True):
        ax.plot(years, [get(r) for r in DOCUMENT], "k--", marker="o", label="document",
                linewidth=2)
        for stage in stages:
            ax.plot([r.year for r in stage.years], [get(r) for r in stage.years], marker=".",
                    label=stage.name)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("year")
        ax.set_xticks(years)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("The founding document's projection and what the simulator makes of it")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
