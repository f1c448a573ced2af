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


def register(app: typer.Typer) -> None:
    app.add_typer(chain_app, name="chain")
