"""`p2pinfer wallet [deposit | withdraw | stake | unstake | redeem]`: the node's chain
account (derived from its key) and what it holds on the settlement contracts.

web3 is imported when a wallet command runs, not when the CLI starts (it costs every
other command a second)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from p2pinfer.cli.identity_cmds import HomeOption
from p2pinfer.errors import UsageError
from p2pinfer.settle.ports import TxOutcome
from p2pinfer.settle.units import credits_to_units, units_to_credits

if TYPE_CHECKING:
    from p2pinfer.settle.chain import ChainClient

wallet_app = typer.Typer(help="The node's chain account: balances, channels, stake.")

RpcOption = Annotated[str | None, typer.Option(
    "--chain-rpc", envvar="P2PINFER_CHAIN_RPC", help="EVM JSON-RPC URL.")]
ContractOption = Annotated[str | None, typer.Option(
    "--chain-contract", envvar="P2PINFER_CHAIN_CONTRACT",
    help="Address of the Channels contract (the token and stake are read from it).")]
DeploymentOption = Annotated[Path | None, typer.Option(
    "--deployment", help="Deployment JSON from `p2pinfer chain serve` (rpc and contract).")]
KeyOption = Annotated[Path | None, typer.Option(
    "--key", help="Node key file (default: the key in --home).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
CreditsArg = Annotated[str, typer.Argument(help="Credits, decimals allowed (\"1.5\").")]


def _client(rpc: str | None, contract: str | None, deployment: Path | None,
            key: Path | None, home: Path | None) -> ChainClient:
    from p2pinfer.settle import wallet as W

    target = W.resolve_target(rpc, contract, deployment)
    account = W.load_account(key, home)
    return W.connect(target, account)


def _units(text: str) -> int:
    try:
        units = credits_to_units(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if units == 0:
        raise UsageError("the amount must be more than 0 credits")
    return units


def _report(as_json: bool, action: str, text: str, outcome: TxOutcome,
            **extra: Any) -> None:
    from p2pinfer.settle import wallet as W

    if as_json:
        typer.echo(json.dumps({"action": action, **extra, **W.outcome_json(outcome)}))
    else:
        typer.echo(f"{text} (tx {outcome.tx_hash}, block {outcome.block})")


def _when(unix_s: int) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="seconds")


@wallet_app.callback(invoke_without_command=True)
def show(ctx: typer.Context, chain_rpc: RpcOption = None, chain_contract: ContractOption = None,
         deployment: DeploymentOption = None, key: KeyOption = None, home: HomeOption = None,
         as_json: JsonOption = False) -> None:
    """Show the account: address, ether, credits, locked stake, unbonding and its release
    time, and the channels it funds. Subcommands take the same options after their name."""
    if ctx.invoked_subcommand is not None:
        return
    from p2pinfer.settle import wallet as W

    client = _client(chain_rpc, chain_contract, deployment, key, home)
    b = client.balances()
    data = W.balances_json(client, b)
    if as_json:
        typer.echo(json.dumps(data))
        return
    typer.echo(f"address       {b.address}  (chain {client.chain_id}, {client.rpc})")
    typer.echo(f"ether         {data['ether']['ether']}")
    typer.echo(f"credits       {units_to_credits(b.credits)}")
    typer.echo(f"locked stake  {units_to_credits(b.locked_stake)}")
    release = f"  (free at {_when(b.release_at)})" if b.unbonding else ""
    typer.echo(f"unbonding     {units_to_credits(b.unbonding)}{release}")
    for c in b.channels:
        reclaim = f", reclaim at {_when(c.state.reclaim_at)}" if c.state.reclaim_at else ""
        typer.echo(f"channel to {c.provider}: {units_to_credits(c.state.unredeemed)} left of "
                   f"{units_to_credits(c.state.deposit)}{reclaim}")


@wallet_app.command("deposit")
def deposit(provider: Annotated[str, typer.Argument(help="The provider's chain address.")],
            amount: CreditsArg, chain_rpc: RpcOption = None,
            chain_contract: ContractOption = None, deployment: DeploymentOption = None,
            key: KeyOption = None, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Deposit credits into the payment channel toward PROVIDER (approve + deposit)."""
    from p2pinfer.settle import wallet as W

    to, units = W.resolve_provider(provider), _units(amount)
    outcome = _client(chain_rpc, chain_contract, deployment, key, home).deposit(to, units)
    _report(as_json, "deposit", f"deposited {units_to_credits(units)} credits to {to}",
            outcome, provider=to, units=units)


@wallet_app.command("withdraw")
def withdraw(provider: Annotated[str, typer.Argument(help="The provider's chain address.")],
             chain_rpc: RpcOption = None, chain_contract: ContractOption = None,
             deployment: DeploymentOption = None, key: KeyOption = None,
             home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Take back what the channel toward PROVIDER holds: the first call starts the reclaim
    timeout, a call after it is over refunds (says which it did)."""
    from p2pinfer.settle import wallet as W

    to = W.resolve_provider(provider)
    client = _client(chain_rpc, chain_contract, deployment, key, home)
    action, outcome = W.withdraw(client, to)
    text = (f"started the reclaim of the channel to {to}; run withdraw again once it is due"
            if action == "start_reclaim" else f"reclaimed the channel to {to}")
    _report(as_json, action, text, outcome, provider=to)


@wallet_app.command("stake")
def stake(amount: CreditsArg, chain_rpc: RpcOption = None,
          chain_contract: ContractOption = None, deployment: DeploymentOption = None,
          key: KeyOption = None, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Lock credits as stake (approve + lock)."""
    units = _units(amount)
    outcome = _client(chain_rpc, chain_contract, deployment, key, home).lock(units)
    _report(as_json, "lock", f"locked {units_to_credits(units)} credits", outcome, units=units)


@wallet_app.command("unstake")
def unstake(amount: Annotated[str | None, typer.Argument(
                help="Credits to start unbonding (not with --withdraw).")] = None,
            collect: Annotated[bool, typer.Option(
                "--withdraw", help="Collect the unbonded lot once its time is over.")] = False,
            chain_rpc: RpcOption = None, chain_contract: ContractOption = None,
            deployment: DeploymentOption = None, key: KeyOption = None,
            home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Start unbonding CREDITS of locked stake, or with --withdraw collect the lot after
    the unbonding time."""
    if collect == (amount is not None):
        raise UsageError("give either CREDITS to unbond or --withdraw to collect")
    client = _client(chain_rpc, chain_contract, deployment, key, home)
    if collect:
        _report(as_json, "withdraw_stake", "withdrew the unbonded stake",
                client.withdraw_stake())
        return
    units = _units(amount or "0")
    outcome = client.begin_unbond(units)
    _report(as_json, "begin_unbond", f"unbonding {units_to_credits(units)} credits",
            outcome, units=units)


@wallet_app.command("redeem")
def redeem(consumer: Annotated[str, typer.Option("--consumer", help="Consumer address.")],
           cumulative: Annotated[int, typer.Option(
               "--cumulative", min=1, help="All the consumer owes, in units.")],
           sig: Annotated[str, typer.Option("--sig", help="The voucher signature, hex.")],
           chain_rpc: RpcOption = None, chain_contract: ContractOption = None,
           deployment: DeploymentOption = None, key: KeyOption = None,
           home: HomeOption = None, as_json: JsonOption = False) -> None:
    """As a provider, redeem one consumer's voucher."""
    # TODO(issue 15): redeem every voucher of the node-side voucher journal
    # (settle.channels) once it is on main, keeping these flags for one voucher.
    try:
        signature = bytes.fromhex(sig.removeprefix("0x"))
    except ValueError:
        raise UsageError("--sig is the voucher signature in hex") from None
    from p2pinfer.settle.chain import checksum

    who = str(checksum(consumer))
    client = _client(chain_rpc, chain_contract, deployment, key, home)
    _report(as_json, "redeem", f"redeemed {consumer}'s voucher up to {cumulative} units",
            client.redeem(who, cumulative, signature), consumer=who, cumulative=cumulative)


def register(app: typer.Typer) -> None:
    app.add_typer(wallet_app, name="wallet")
