"""`p2pinfer chain serve`: a local EVM chain for testnets (docs/settlement.md).

web3 and eth-tester are imported when the command runs, not when the CLI starts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import trio
import typer

from p2pinfer.errors import UsageError
from p2pinfer.settle.units import credits_to_units

chain_app = typer.Typer(help="A local EVM chain for testnets.", no_args_is_help=True)


def _setup_logging(level: str) -> None:
    # The node's setup (cli.node_cmds) would import the whole node; this is its format.
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


def parse_fund(specs: list[str]) -> tuple[tuple[str, int], ...]:
    """`ADDR=CREDITS` strings as (checksummed address, units); UsageError on a bad one."""
    from p2pinfer.settle.chain import checksum

    out: list[tuple[str, int]] = []
    for spec in specs:
        address, sep, amount = spec.partition("=")
        if not sep:
            raise UsageError(f"bad --fund {spec!r}: expected ADDRESS=CREDITS, e.g. 0xab..=100")
        try:
            units = credits_to_units(amount)
        except ValueError as exc:
            raise UsageError(f"bad --fund {spec!r}: {exc}") from None
        out.append((str(checksum(address)), units))
    return tuple(out)


@chain_app.command("serve")
def serve(
    deployment: Annotated[Path, typer.Option(
        "--deployment", help="Write the deployment JSON (rpc, chain_id, channels, credit, "
        "stake, faucet) here once the chain answers.")],
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default).")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535,
                                      help="TCP port (0: any free port).")] = 8545,
    preset: Annotated[str, typer.Option(
        "--preset", help="Split preset of the contracts: seed | bme.")] = "seed",
    fund: Annotated[list[str] | None, typer.Option(
        "--fund", help="ADDRESS=CREDITS to send from the faucet at start, with ether for "
        "gas (repeatable).")] = None,
    block_time_s: Annotated[float, typer.Option(
        "--block-time-s", min=0.0, help="Seconds between blocks; 0: one block per "
        "transaction.")] = 0.0,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING.")
                         ] = "INFO",
) -> None:
    """Serve JSON-RPC over an in-process py-evm chain with the contracts deployed, until
    Ctrl-C or SIGTERM. Also answers evm_increaseTime / evm_mine and the dev-only faucet
    p2pinfer_fund(address, credits)."""
    from p2pinfer.settle.chain_serve import ChainServeOptions, serve_chain

    _setup_logging(log_level)
    options = ChainServeOptions(deployment_file=deployment, host=host, port=port,
                                preset=preset, fund=parse_fund(fund or []),
                                block_time_s=block_time_s)
    trio.run(serve_chain, options)


@chain_app.command("deploy")
def deploy(
    rpc: Annotated[str, typer.Option("--rpc", envvar="P2PINFER_CHAIN_RPC",
                                     help="JSON-RPC URL of the chain to deploy on.")],
    deployment: Annotated[Path, typer.Option(
        "--deployment", help="Write the deployment JSON (rpc, chain_id, credit, stake, "
        "channels) here; `wallet --deployment` and testnets read it.")],
    key: Annotated[Path | None, typer.Option(
        "--key", help="Node key file whose chain account deploys and pays the gas "
        "(default: the key in --home).")] = None,
    home: Annotated[Path | None, typer.Option("--home", help="Node home (for its key).")
                    ] = None,
    preset: Annotated[str, typer.Option("--preset", help="Split preset: seed | bme.")
                      ] = "seed",
    treasury: Annotated[str | None, typer.Option(
        "--treasury", help="Treasury address (default: the deploying account).")] = None,
    slash_threshold: Annotated[int, typer.Option(
        "--slash-threshold", min=1, max=16, help="Validator signatures a slash needs.")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print the deployment as JSON.")
                       ] = False,
) -> None:
    """Deploy Credit, Stake and Channels from this node's chain account (it receives the
    initial supply and pays the gas). The contracts have no owner: what is deployed is
    final. Point nodes at the result with --chain-rpc and --chain-contract CHANNELS."""
    import json

    from p2pinfer.settle.deploy import deploy_to
    from p2pinfer.settle.wallet import load_account

    done = deploy_to(rpc, load_account(key, home), preset=preset, treasury=treasury,
                     slash_threshold=slash_threshold)
    record = {**json.loads(done.to_json()), "rpc": rpc}  # as `chain serve` writes it
    deployment.write_text(json.dumps(record, sort_keys=True) + "\n")
    if as_json:
        typer.echo(json.dumps(record))
    else:
        typer.echo(f"deployed on chain {done.chain_id}: channels={done.channels} "
                   f"credit={done.credit} stake={done.stake} (written to {deployment})")


def register(app: typer.Typer) -> None:
    app.add_typer(chain_app, name="chain")
