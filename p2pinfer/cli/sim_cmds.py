"""`p2pinfer sim run | compare | projection`: the tokenomics simulator."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table as RichTable

from p2pinfer.errors import UsageError
from p2pinfer.sim.config import load_params
from p2pinfer.sim.params import SIM_PRESETS, SimParams

if TYPE_CHECKING:
    from p2pinfer.market.kpis import DayKPIs
    from p2pinfer.sim.report import Table

# The simulator (numpy) and plots (matplotlib) are imported inside the commands, so that
# every other `p2pinfer` command starts without them.

STAB = "+stabilizer"
sim_app = typer.Typer(help="Simulate the network's economy (tokenomics).", no_args_is_help=True)

DaysOption = Annotated[int, typer.Option("--days", min=1, max=36_500, help="Days to simulate.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Random seed: same seed, same output.")]
ConfigOption = Annotated[Path | None, typer.Option(
    "--config", help="TOML file of parameters (see docs/sim-defaults.toml).")]
OutOption = Annotated[Path, typer.Option("--out", help="Directory for the CSV and PNG files.")]
StabilizerOption = Annotated[bool, typer.Option(
    "--stabilizer", help="Turn on the price stabilizer (±10% band, 10% of the fund a day).")]
ProvidersOption = Annotated[int | None, typer.Option(
    "--providers", min=0, help="Providers at launch (overrides the config).")]
PlotOption = Annotated[bool, typer.Option("--plots/--no-plots", help="Write PNG plots.")]


def _params(preset: str | None, config: Path | None, stabilizer: bool,
            providers: int | None) -> SimParams:
    params = load_params(config, preset)
    if stabilizer:
        params = replace(params, stabilizer=replace(params.stabilizer, enabled=True))
    if providers is not None:
        params = replace(params, network=replace(params.network, initial_providers=providers))
    return params.validate()


def _out_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output directory {out}: {exc.strerror}") from None
    return out


def _simulate(params: SimParams, days: int, seed: int, label: str,
              console: Console) -> list[DayKPIs]:
    from p2pinfer.sim.engine import Simulation

    sim = Simulation(params, random.Random(seed))
    rows: list[DayKPIs] = []
    with console.status(f"simulating {label}: day 0 of {days}") as status:
        for day in range(days):
            rows.append(sim.step())
            if day % 30 == 0:
                status.update(f"simulating {label}: day {day} of {days}")
    return rows


def _print(console: Console, table: Table) -> None:
    rich = RichTable(title=table.title)
    for i, col in enumerate(table.columns):
        rich.add_column(col, justify="left" if i == 0 else "right")
    for row in table.rows:
        rich.add_row(*row)
    console.print(rich)


@sim_app.command("run")
def run(
    out: OutOption,
    preset: Annotated[str | None, typer.Option(
        "--preset", help=f"Economy: {', '.join(SIM_PRESETS)} (default: the config's, or seed).")
    ] = None,
    days: DaysOption = 365,
    seed: SeedOption = 1,
    config: ConfigOption = None,
    stabilizer: StabilizerOption = False,
    providers: ProvidersOption = None,
    plots: PlotOption = True,
) -> None:
    """Simulate one economy; write kpis.csv (one row a day) and network/economics/token PNGs."""
    from p2pinfer.market.kpis import write_csv
    from p2pinfer.sim import report

    params = _params(preset, config, stabilizer, providers)
    directory = _out_dir(out)
    console = Console()
    rows = _simulate(params, days, seed, params.preset, console)
    write_csv(rows, directory / "kpis.csv")
    written = [directory / "kpis.csv"]
    if plots:
        from p2pinfer.sim.plots import plot_run

        written += plot_run(rows, directory, f"{params.preset} (seed {seed})")
    _print(console, report.summary_table([report.summarise(params.preset, rows)],
                                         f"{params.preset}: {days} days, seed {seed}"))
    console.print("wrote " + ", ".join(str(p) for p in written))


@sim_app.command("compare")
def compare(
    out: OutOption,
    presets: Annotated[str, typer.Option(
        "--presets", help="Comma-separated presets to run side by side; NAME+stabilizer turns "
        "the stabilizer on for one.")] = "seed,bme,render",
    days: DaysOption = 365,
    seed: SeedOption = 1,
    seeds: Annotated[int, typer.Option(
        "--seeds", min=1, max=100,
        help="Run seeds S..S+N-1 and show the mean of each figure (plots show seed S).")] = 1,
    config: ConfigOption = None,
    stabilizer: StabilizerOption = False,
    providers: ProvidersOption = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Also print markdown.")] = False,
) -> None:
    """Run several presets with the same seed(s) and config; one table, one plot (compare.png).

    A preset named NAME+stabilizer runs NAME with the price stabilizer on.
    """
    from p2pinfer.market.kpis import write_csv
    from p2pinfer.sim import report

    names = [n.strip() for n in presets.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise UsageError("--presets needs distinct preset names, e.g. seed,bme,render")
    # "bme+stabilizer" is the bme preset with the price stabilizer on.
    all_params = [replace(_params(n.removesuffix(STAB), config, stabilizer or n.endswith(STAB),
                                  providers), preset=n) for n in names]
    directory = _out_dir(out)
    console = Console()
    runs: dict[str, list[DayKPIs]] = {}
    summaries = []
    for name, params in zip(names, all_params, strict=True):
        per_seed = []
        for s in range(seed, seed + seeds):
            rows = _simulate(params, days, s, f"{name} seed {s}", console)
            if s == seed:
                runs[name] = rows
                write_csv(rows, directory / f"{name}.csv")
            per_seed.append(report.summarise(name, rows))
        summaries.append(report.mean_summary(per_seed))
    which = f"seed {seed}" if seeds == 1 else f"mean of seeds {seed}..{seed + seeds - 1}"
    table = report.summary_table(summaries, f"{', '.join(names)}: {days} days, {which}")
    table.write_csv(directory / "compare.csv")
    from p2pinfer.sim.plots import plot_compare

    plot_compare(runs, directory / "compare.png", f"{' vs '.join(names)}: {days} days, seed "
                 f"{seed}")
    _print(console, table)
    if markdown:
        typer.echo(table.markdown())
    console.print(f"wrote {directory / 'compare.csv'}, {directory / 'compare.png'} and one "
                  "CSV per preset")


@sim_app.command("projection")
def projection(
    out: OutOption,
    seed: SeedOption = 1,
    config: ConfigOption = None,
    years: Annotated[int, typer.Option("--years", min=1, max=5,
                                       help="Years of the stress test (the replay is 5).")] = 5,
    markdown: Annotated[bool, typer.Option("--markdown", help="Also print markdown.")] = False,
) -> None:
    """Replay the founding document's five-year projection, unpack it, and stress-test it."""
    from p2pinfer.sim import projection as J
    from p2pinfer.sim import report

    base = load_params(config, "seed")
    directory = _out_dir(out)
    console = Console()
    with console.status("replaying the document's projection (5 years, up to 100,000 "
                        "providers)"):
        replayed = J.replay(seed, base)
    tables = [report.document_table(J.DOCUMENT, "The document's projection"),
              report.document_table(replayed, "The simulator under the document's assumptions"),
              report.implied_table(J.implied(base)), report.economics_table(J.economics(base)),
              report.unit_cost_table(J.unit_costs(base), base.token.initial_price_usd,
                                     base.split.share("providers") / 100)]
    stages = []
    for name, description, params in J.stage_params(base):
        rows = _simulate(params, years * 365, seed, f"stage {name}", console)
        stages.append(J.Stage(name, description, tuple(J.yearly(rows))))
    tables.append(report.stages_table(stages))
    for i, table in enumerate(tables):
        _print(console, table)
        table.write_csv(directory / f"projection-{i + 1}.csv")
        if markdown:
            typer.echo(table.markdown())
    for st in stages:
        console.print(f"[bold]{st.name}[/bold]: {st.description}")
    from p2pinfer.sim.plots import plot_projection

    plot_projection(stages, directory / "projection.png")
    console.print(f"wrote {directory}/projection-*.csv and {directory / 'projection.png'}")


def register(app: typer.Typer) -> None:
    app.add_typer(sim_app, name="sim")
