"""`p2pinfer hw`: show this machine's hardware and benchmark a model on it."""

from __future__ import annotations

import json
from typing import Annotated

import trio
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from p2pinfer.backends.base import Backend
from p2pinfer.backends.factory import BACKEND_HELP, make_backend, model_cache_dir
from p2pinfer.backends.models import find_model, resolve_model_spec
from p2pinfer.cli.identity_cmds import HomeOption
from p2pinfer.config import resolve_home
from p2pinfer.hardware.benchmark import BenchCache, BenchResult, cached_benchmark
from p2pinfer.hardware.probe import MachineProfile, probe

GIB = 2**30


def _show_profile(console: Console, profile: MachineProfile) -> None:
    table = Table(title=f"hardware {profile.fingerprint()}", show_header=False)
    table.add_row("CPU", f"{profile.cpu_model} ({profile.cpu_cores} cores, "
                  f"{profile.cpu_threads} threads, {profile.arch})")  # fmt: skip
    table.add_row("RAM", f"{profile.ram_total_bytes / GIB:.1f} GiB "
                  f"({profile.ram_available_bytes / GIB:.1f} GiB free)")  # fmt: skip
    if not profile.gpus:
        table.add_row("GPU", "none (no NVIDIA driver found)")
    for gpu in profile.gpus:
        table.add_row(f"GPU {gpu.index}", f"{gpu.name}, {gpu.vram_total_bytes / GIB:.1f} GiB "
                      f"({gpu.vram_free_bytes / GIB:.1f} GiB free)")  # fmt: skip
    table.add_row("OS", profile.os)
    console.print(table)


def _show_bench(console: Console, result: BenchResult, cached: bool) -> None:
    table = Table(title=f"{result.model} on {result.backend}" + (" (cached)" if cached else ""))
    for column in ("prompt tok/s", "generation tok/s", "first token"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{result.prompt_tokens_per_s:.1f}",
        f"{result.gen_tokens_per_s:.1f}",
        f"{result.ttft_ms:.0f} ms",
    )
    console.print(table)


async def _bench(
    backend: Backend, model: str, fingerprint: str, cache: BenchCache, force: bool, runs: int,
    console: Console,
) -> tuple[BenchResult, bool]:  # fmt: skip
    try:
        info = await find_model(backend, model)
        with Progress(
            TextColumn("benchmarking {task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} runs"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task(info.name, total=runs + 1)
            return await cached_benchmark(
                backend, info, fingerprint, cache, force=force, runs=runs,
                on_progress=lambda done, _total: progress.update(task, completed=done),
            )  # fmt: skip
    finally:
        await backend.aclose()


def hw(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    bench: Annotated[
        str | None, typer.Option("--bench", metavar="MODEL", help="Benchmark this model.")
    ] = None,
    backend: Annotated[
        str, typer.Option(help=f"Engine to benchmark: {BACKEND_HELP}.")
    ] = "embedded",
    runs: Annotated[int, typer.Option(min=1, help="Timed runs (medians are reported).")] = 3,
    force: Annotated[bool, typer.Option(help="Measure again even if cached.")] = False,
    home: HomeOption = None,
) -> None:
    """Show CPU, RAM and GPUs; with --bench, measure a model's speed (cached per machine)."""
    # Progress goes to stderr so that --json output stays clean.
    console = Console(stderr=as_json)
    profile = probe()
    result: BenchResult | None = None
    cached = False
    if bench is not None:
        models = [bench] if backend.strip() == "embedded" else []
        if models:  # a path or NAME=PATH names the model it loads
            bench = resolve_model_spec(bench, model_cache_dir(home)).name
        engine = make_backend(backend, models=models, home=home)
        cache = BenchCache(resolve_home(home) / "bench.json")
        result, cached = trio.run(
            _bench, engine, bench, profile.fingerprint(), cache, force, runs, console
        )
    if as_json:
        out: dict[str, object] = {"hardware": profile.to_json()}
        if result is not None:
            out["benchmark"] = {**result.to_json(), "cached": cached}
        typer.echo(json.dumps(out, indent=2))
        return
    _show_profile(console, profile)
    if result is not None:
        _show_bench(console, result, cached)


def register(app: typer.Typer) -> None:
    app.command("hw")(hw)
