"""`p2pinfer kpis [--home DIR] [--json] [--window-days N]`: the live sustainability KPIs.

With a node running in the home (node.json names a live pid and a gateway), the
node computes them at `/admin/kpis` from its ledger and catalog. Otherwise they
come from the home's ledger alone, with no catalog: utilisation is then
unknown, and the output says so (`"source": "ledger-only"`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from p2pinfer.cli.ledger_cmds import HomeOption, JsonOption
from p2pinfer.cli.node_gateway import gateway_request, running_gateway_url
from p2pinfer.config import resolve_home
from p2pinfer.errors import LedgerError
from p2pinfer.market.kpis import DAY_MS, DEFAULT_WINDOW_MS, CatalogCounts, credits_text, ledger_kpis
from p2pinfer.market.ledger import Ledger, ledger_path


def collect_kpis(home: Path, window_ms: int, now_ms: int) -> tuple[str, dict[str, Any]]:
    """(source, KPIs as JSON): from the running node's gateway, else from the ledger alone."""
    url = running_gateway_url(home)
    if url is not None and window_ms == DEFAULT_WINDOW_MS:
        return f"node {url}", dict(gateway_request(url, "GET", "/admin/kpis"))
    path = ledger_path(home)
    if not path.exists():
        raise LedgerError(f"no ledger at {path}: run `p2pinfer node --home {home}` first")
    with Ledger.open(path) as ledger:
        kpis = ledger_kpis(ledger.entries(), CatalogCounts(0, 0), now_ms, window_ms)
    return "ledger-only", dataclasses.asdict(kpis)


def kpis(
    home: HomeOption = None,
    as_json: JsonOption = False,
    window_days: Annotated[int, typer.Option("--window-days", min=1,
                                             help="Window in days (default 30).")] = 30,
) -> None:
    """Show the network's KPIs as this node sees them (revenue, growth, retention, quality)."""
    h = resolve_home(home)
    source, data = collect_kpis(h, window_days * DAY_MS, time.time_ns() // 1_000_000)
    if as_json:
        typer.echo(json.dumps({"source": source, **data}))
        return
    console = Console()
    console.print(f"KPIs over the last {data['window_ms'] // DAY_MS} days, from {source}"
                  + (" (no catalog: utilisation unknown)" if source == "ledger-only" else ""))
    table = Table()
    table.add_column("KPI")
    table.add_column("value", justify="right")
    for name, value in data.items():
        if name == "window_ms":
            continue
        if value is None:
            shown = "-"
        elif name.endswith("_ucr"):
            name, shown = name[: -len("_ucr")] + " (credits)", credits_text(int(value))
        elif isinstance(value, float):
            shown = f"{value:.4g}"
        else:
            shown = str(value)
        table.add_row(name, shown)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("kpis")(kpis)
