"""`p2pinfer gov propose|vote|status|stake|sync`: governance through the running node's gateway.

The node signs proposals and votes with its own key (the key that declared its
stake) and publishes them; these commands only ask it to, at `/admin/gov*`.
"""

from __future__ import annotations

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
from p2pinfer.errors import UsageError

gov_app = typer.Typer(help="Propose, vote on and tally network parameters.", no_args_is_help=True)


def _request(home: Path | None, method: str, path: str, content: bytes | None = None) -> Any:
    """`method path` on the gateway of the node running in `home`, as its operator."""
    h = resolve_home(home)
    url = running_gateway_url(h)
    if url is None:
        raise UsageError(f"no running node with a gateway in {h}: start `p2pinfer node` first")
    return gateway_request(url, method, path, content=content, home=h)


def _value(raw: str) -> int | str:
    return int(raw) if raw.lstrip("-").isdigit() else raw


def _show(rows: list[dict[str, Any]]) -> None:
    table = Table()
    for col in ("id", "parameter", "value", "outcome", "yes", "no", "voters", "deadline in s",
                "in effect"):
        table.add_column(col)
    now = time.time_ns() // 1_000_000
    for r in rows:
        table.add_row(r["id"][:16], r["parameter"], str(r["value"]), r["outcome"],
                      str(r["yes_stake"]), str(r["no_stake"]), str(r["voters"]),
                      str(max(0, (r["voting_deadline"] - now) // 1000)),
                      "yes" if r["in_effect"] else "")
    Console().print(table)


@gov_app.command("propose")
def propose(
    parameter: Annotated[str, typer.Argument(help="base_rate, split_preset, check_rate_pm, "
                                                  "min_stake")],
    value: Annotated[str, typer.Argument(help="The new value (an integer or a preset name).")],
    voting_s: Annotated[int, typer.Option(
        "--voting-s", min=1, help="Voting lasts this long (nodes refuse under an hour, or "
                                  "their --gov-min-voting-s).")] = 86_400,
    effective_s: Annotated[int, typer.Option(
        "--effective-s", min=0, help="Takes effect this long after the vote closes.")] = 0,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Propose a new value for a parameter; prints the proposal's id."""
    now = time.time_ns() // 1_000_000
    deadline = now + voting_s * 1000
    row = _request(home, "POST", "/admin/gov/propose", content=json.dumps({
        "parameter": parameter, "value": _value(value), "voting_deadline": deadline,
        "effective_at": deadline + effective_s * 1000}).encode())
    typer.echo(json.dumps(row) if as_json else row["id"])


@gov_app.command("vote")
def vote(
    proposal: Annotated[str, typer.Argument(help="The proposal's id (hex).")],
    choice: Annotated[str, typer.Argument(help="yes or no")],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Vote on a proposal with this node's declared stake."""
    if choice not in ("yes", "no"):
        raise UsageError("vote yes or no")
    row = _request(home, "POST", "/admin/gov/vote",
                          content=json.dumps({"proposal": proposal, "yes": choice == "yes"})
                          .encode())
    if as_json:
        typer.echo(json.dumps(row))
    else:
        _show([row])


@gov_app.command("status")
def status(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Every proposal this node has seen, its tally, and the parameters in effect."""
    data = _request(home, "GET", "/admin/gov")
    if as_json:
        typer.echo(json.dumps(data))
        return
    _show(list(data["proposals"]))
    for p in data["in_effect"]:
        typer.echo(f"in effect: {p['parameter']} = {p['value']} (proposal {p['proposal'][:16]})")


@gov_app.command("stake")
def stake(
    declaration: Annotated[str | None, typer.Argument(
        help="Another node's signed stake declaration (hex) to accept; none: print this "
             "node's own, to hand to other operators.")] = None,
    home: HomeOption = None,
) -> None:
    """Accept another key's stake for this node's tally, or print this node's own.

    Until stake is locked on a chain, a vote weighs only stake recorded in the counting
    node's ledger: its own --stake and the declarations its operator accepts here."""
    if declaration is None:
        own = _request(home, "GET", "/admin/gov")["stake_declaration"]
        if not own:
            raise UsageError("this node declares no stake (start it with --stake)")
        typer.echo(own)
        return
    data = _request(home, "POST", "/admin/gov/stake",
                           content=json.dumps({"declaration": declaration}).encode())
    typer.echo(f"accepted: its votes weigh {data['weight']} micro-credits here")


@gov_app.command("sync")
def sync(home: HomeOption = None) -> None:
    """Fetch missed proposals and votes from connected peers now."""
    data = _request(home, "POST", "/admin/gov/sync", content=b"{}")
    typer.echo(f"{data['new_messages']} new messages")


def register(app: typer.Typer) -> None:
    app.add_typer(gov_app, name="gov")
