"""`p2pinfer ledger [--verify] [--json]` and `p2pinfer reputation [--json]`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from p2pinfer import identity
from p2pinfer.config import resolve_home
from p2pinfer.errors import LedgerIntegrityError
from p2pinfer.identity import peer_id_from_public_key
from p2pinfer.market.entries import Entry, body_amount
from p2pinfer.market.ledger import Ledger, ledger_path
from p2pinfer.market.pricing import MICRO_PER_CREDIT
from p2pinfer.verify import reputation as R
from p2pinfer.verify.reputation_store import ReputationBook, reputation_path

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Node state directory (default: $P2PINFER_HOME, else the platform data dir).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def credits(micro: int) -> str:
    """Micro-credits as a decimal number of credits, exactly (no float)."""
    whole, frac = divmod(abs(micro), MICRO_PER_CREDIT)
    return f"{'-' if micro < 0 else ''}{whole}.{frac:06d}"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _detail(entry: Entry) -> str:
    fields = entry.body.fields()
    if "job" in fields:
        return f"job {fields['job'].hex()[:12]}"
    if entry.kind == "slash":
        return str(fields["reason"])
    if entry.kind == "redemption":
        return f"tx {fields['tx'][:18]} block {fields['block']}"
    if entry.kind == "faucet":
        return f"grant {fields['grant']}" if fields["grant"] else ""
    return ""


def _entry_json(entry: Entry) -> dict[str, Any]:
    return {
        "seq": entry.seq, "at_ms": entry.at_ms, "kind": entry.kind,
        "subject": entry.body.subject(), "amount": body_amount(entry.body),
        "detail": _detail(entry), "hash": entry.entry_hash.hex(),
    }


def _expected_signer(home: Path) -> bytes | None:
    # The node's own key is the authority; without one, trust the owner recorded in the file.
    if identity.key_path(home).exists():
        return identity.load(home).public_key
    return None


def _verify(ledger: Ledger, home: Path, as_json: bool) -> None:
    report = ledger.verify(expected_signer=_expected_signer(home))
    if as_json:
        bad = None if report.bad is None else {"seq": report.bad.seq, "reason": report.bad.reason}
        typer.echo(json.dumps({
            "ok": report.ok, "verified": report.verified, "head_seq": report.head_seq,
            "head_hash": report.head_hash.hex(), "bad": bad,
        }))
    if report.bad is not None:
        raise LedgerIntegrityError(f"entry {report.bad.seq}: {report.bad.reason}")
    if not as_json:
        typer.echo(f"ledger ok: {report.verified} entries verified, head {report.head_hash.hex()}")


def _show(ledger: Ledger, limit: int, as_json: bool) -> None:
    head = ledger.head()
    balances = ledger.balances()
    recent = ledger.entries(limit=limit, newest_first=True)
    owner = peer_id_from_public_key(ledger.owner) if ledger.owner else None
    if as_json:
        typer.echo(json.dumps({
            "path": str(ledger.path), "owner": owner,
            "head": {"seq": head.seq, "hash": head.entry_hash.hex()},
            "balances": [{"account": b.account, "amount": b.amount} for b in balances],
            "entries": [_entry_json(e) for e in recent],
        }))
        return
    console = Console()
    console.print(f"ledger {ledger.path}\nowner {owner}\n{head.seq} entries, "
                  f"head {head.entry_hash.hex()[:16]}")
    table = Table(title="balances (derived from entries)")
    table.add_column("account")
    table.add_column("micro-credits", justify="right")
    table.add_column("credits", justify="right")
    for b in balances:
        table.add_row(b.account, str(b.amount), credits(b.amount))
    console.print(table)
    table = Table(title=f"last {len(recent)} entries")
    for col in ("seq", "time (UTC)", "kind", "subject", "amount", "detail"):
        table.add_column(col, justify="right" if col in ("seq", "amount") else "left")
    for e in recent:
        table.add_row(str(e.seq), _iso(e.at_ms), e.kind, e.body.subject(),
                      str(body_amount(e.body)), _detail(e))
    console.print(table)


def ledger(
    home: HomeOption = None,
    as_json: JsonOption = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Walk the hash chain and check every signature.")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=0, help="Recent entries to show.")] = 20,
    chain_rpc: Annotated[str | None, typer.Option(
        "--chain-rpc", envvar="P2PINFER_CHAIN_RPC",
        help="With --verify: also reconcile the voucher journal with this chain.")] = None,
    chain_contract: Annotated[str | None, typer.Option(
        "--chain-contract", envvar="P2PINFER_CHAIN_CONTRACT",
        help="The Channels contract on --chain-rpc.")] = None,
) -> None:
    """Show balances and recent entries, or verify the ledger (exit 11 on the first bad
    entry); with a chain, --verify also reconciles the journal with it (exit 11 on a
    mismatch)."""
    h = resolve_home(home)
    with Ledger.open(ledger_path(h)) as led:
        if verify:
            # Both name the chain (a node container has only the RPC in its environment,
            # the contract on its command line): with one of them, the chain is not known.
            chain = chain_rpc is not None and chain_contract is not None
            _verify(led, h, as_json and not chain)
            if chain:
                _reconcile(led, h, _ChainFlags(chain_rpc, chain_contract), as_json)
        else:
            _show(led, limit, as_json)


@dataclass(frozen=True)
class _ChainFlags:
    chain_rpc: str | None
    chain_contract: str | None


def _reconcile(ledger: Ledger, home: Path, flags: _ChainFlags, as_json: bool) -> None:
    # The chain client (web3) is imported only by commands that use it.
    from p2pinfer.settle.reconcile import reconcile
    from p2pinfer.settle.wiring import connect_chain

    chain = connect_chain(flags, identity.load(home))
    outcome = reconcile(ledger.entries(), chain)
    if as_json:
        typer.echo(json.dumps({
            "ok": outcome.ok, "channels": outcome.channels, "redemptions": outcome.redemptions,
            "other_contracts": outcome.other_contracts,
            "mismatches": [{"consumer": m.consumer, "provider": m.provider, "reason": m.reason}
                           for m in outcome.mismatches]}))
    if not outcome.ok:
        first = outcome.mismatches[0]
        raise LedgerIntegrityError(
            f"journal and chain disagree on channel {first.consumer} -> {first.provider}: "
            f"{first.reason} ({len(outcome.mismatches)} mismatch(es))")
    if not as_json:
        typer.echo(f"chain ok: {outcome.channels} channels and {outcome.redemptions} "
                   f"redemptions match the journal")


def _peer_json(rec: R.PeerReputation, now_ms: int) -> dict[str, Any]:
    return {
        "peer_id": rec.peer_id, "score_pm": rec.score_pm, "breaker": rec.breaker.state.value,
        "jobs_ok": rec.jobs_ok, "jobs_failed": rec.jobs_failed,
        "checks_passed": rec.checks_passed, "checks_failed": rec.checks_failed,
        "probation": R.on_probation(rec, now_ms), "first_seen_ms": rec.first_seen_ms,
        "updated_ms": rec.updated_ms,
    }


def reputation(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Show this node's reputation table: score, breaker state, jobs and checks per peer."""
    path = reputation_path(resolve_home(home))
    peers: tuple[R.PeerReputation, ...] = ()
    if path.exists():
        with ReputationBook.open(path, create=False) as book:
            peers = book.peers()
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    if as_json:
        typer.echo(json.dumps({"peers": [_peer_json(p, now_ms) for p in peers]}))
        return
    table = Table(title=f"reputation ({len(peers)} peers)")
    for col in ("peer", "score", "breaker", "jobs ok/failed", "checks passed/failed",
                "probation"):
        table.add_column(col)
    for p in peers:
        table.add_row(p.peer_id, f"{p.score_pm / 1000:.3f}", p.breaker.state.value,
                      f"{p.jobs_ok}/{p.jobs_failed}", f"{p.checks_passed}/{p.checks_failed}",
                      "yes" if R.on_probation(p, now_ms) else "no")
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("ledger")(ledger)
    app.command("reputation")(reputation)
