"""Entry point of the `p2pinfer` command.

Commands live in one module each under `p2pinfer/cli/` and expose
`register(app)`; `COMMANDS` names the module of each command. Every
`P2PInferError` becomes one line on stderr and the error's documented exit
code; no traceback reaches the user.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer

from p2pinfer import __version__
from p2pinfer.errors import P2PInferError
from p2pinfer.json_depth import cap_recursion_limit

app = typer.Typer(
    name="p2pinfer",
    help="A peer-to-peer network for LLM inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each top-level command (or group) and the module whose `register` adds it; keep sorted.
# `main` imports only the module of the command named on the line, so `p2pinfer wallet`
# does not pay for the network stack's imports (~1 s); tests keep the table complete.
COMMANDS: dict[str, str] = {
    "ask": "p2pinfer.cli.ask_cmds",
    "chain": "p2pinfer.cli.chain_cmds",
    "engine": "p2pinfer.cli.engine_cmds",
    "gov": "p2pinfer.cli.gov_cmds",
    "hw": "p2pinfer.cli.hw_cmds",
    "id": "p2pinfer.cli.identity_cmds",
    "init": "p2pinfer.cli.identity_cmds",
    "kpis": "p2pinfer.cli.kpis_cmds",
    "ledger": "p2pinfer.cli.ledger_cmds",
    "models": "p2pinfer.cli.network_cmds",
    "node": "p2pinfer.cli.node_cmds",
    "peers": "p2pinfer.cli.network_cmds",
    "reputation": "p2pinfer.cli.ledger_cmds",
    "sim": "p2pinfer.cli.sim_cmds",
    "testnet": "p2pinfer.cli.testnet_cmds",
    "wallet": "p2pinfer.cli.wallet_cmds",
}
COMMAND_MODULES: list[str] = sorted(set(COMMANDS.values()))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"p2pinfer {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """p2pinfer: run a node, ask the network, inspect the ledger."""


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


def _register_for(argv: list[str]) -> None:
    """Register the one module of the command `argv` names (its first word that is not an
    option: the root takes no option with a value); every module when it names none or
    an unknown one, so the root's help and click's "No such command" list them all."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    module = COMMANDS.get(command or "")
    if module is None:
        _register_all()
    else:
        importlib.import_module(module).register(app)


def main() -> None:
    """Run the CLI; map project errors to one line and an exit code."""
    _register_for(sys.argv[1:])
    cap_recursion_limit()  # py_ecc, imported with the commands, raised it (json_depth)
    try:
        # Standalone mode: click prints usage errors itself (exit 2) and exits.
        app()
    except P2PInferError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BaseExceptionGroup as group:
        # A project error from inside a nursery, alone in its (nested) group.
        matched, rest = group.split(P2PInferError)
        leaves = _leaves(matched) if matched is not None and rest is None else []
        if len(leaves) != 1:
            raise
        print(f"error: {leaves[0]}", file=sys.stderr)
        sys.exit(getattr(leaves[0], "exit_code", 1))


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]
