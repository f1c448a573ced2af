"""`p2pinfer models` and `p2pinfer peers`: what the network offers, from a short-lived host."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import trio
import typer
from rich.console import Console
from rich.table import Table

from p2pinfer.cli.ask_cmds import BootstrapOption, TestnetOption
from p2pinfer.cli.identity_cmds import HomeOption
from p2pinfer.cli.node_cmds import setup_logging
from p2pinfer.jobs.job_types import ClientConfig
from p2pinfer.node.session import (
    ModelSummary,
    PeerSummary,
    consumer_session,
    session_config,
    summarize_models,
    summarize_peers,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
WaitOption = Annotated[float, typer.Option(
    "--wait", help="Seconds to spend asking peers for their adverts.")]


def _survey(
    home: Path | None, bootstrap: list[str] | None, testnet_dir: Path | None, wait: float
) -> tuple[list[ModelSummary], list[PeerSummary]]:
    config = session_config(home, bootstrap or (), testnet_dir, client=ClientConfig())

    async def main() -> tuple[list[ModelSummary], list[PeerSummary]]:
        async with consumer_session(config) as client:
            adverts = await client.survey(timeout_s=wait)
            return summarize_models(adverts), summarize_peers(client, adverts)

    return trio.run(main)


def models(
    home: HomeOption = None, bootstrap: BootstrapOption = None,
    testnet_dir: TestnetOption = None, as_json: JsonOption = False, wait: WaitOption = 10.0,
) -> None:
    """Models on the network: how many providers, the best price, the fastest tokens/s."""
    setup_logging("WARNING")
    found, _ = _survey(home, bootstrap, testnet_dir, wait)
    if as_json:
        print(json.dumps([asdict(m) for m in found], indent=2))
        return
    table = Table("model", "providers", "best price /1k", "best tokens/s")
    for m in found:
        table.add_row(m.model, str(m.providers), str(m.best_price_per_1k),
                      f"{m.best_generation_tps:.1f}")
    Console().print(table)


def peers(
    home: HomeOption = None, bootstrap: BootstrapOption = None,
    testnet_dir: TestnetOption = None, as_json: JsonOption = False, wait: WaitOption = 10.0,
) -> None:
    """Peers reachable now: their models, engine, capacity, stake, measured RTT, whether
    they can be dialled (public / private / unknown) and the relays they are reached
    through (behind NAT)."""
    setup_logging("WARNING")
    _, found = _survey(home, bootstrap, testnet_dir, wait)
    if as_json:
        print(json.dumps([{**asdict(p), "relays": list(p.relays)} for p in found], indent=2))
        return
    table = Table("peer", "models", "engine", "capacity", "stake", "rtt ms", "reachability",
                  "via relay")
    for p in found:
        rtt = f"{p.rtt_ms:.1f}" if p.rtt_ms is not None else "-"
        table.add_row(p.peer_id, ", ".join(p.models) or "-", p.engine or "-",
                      str(p.capacity), str(p.stake), rtt, p.reachability,
                      ", ".join(r[:12] + "…" for r in p.relays) or "-")
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
    app.command("peers")(peers)
