"""`p2pinfer <command>` loads only that command's module (`cli/main.COMMANDS`): the table
names every command each module registers, and a command that needs no network does not
import the network stack (libp2p, ~1 s of a command's start)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import typer

import p2pinfer.cli as cli
from p2pinfer.cli.main import COMMAND_MODULES, COMMANDS


def _registered_by(module: str) -> set[str]:
    app = typer.Typer()
    importlib.import_module(module).register(app)
    return {c.name or "" for c in app.registered_commands} | {
        g.name or "" for g in app.registered_groups}


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_the_table_names_every_command_a_module_registers_and_no_other(module: str) -> None:
    assert _registered_by(module) == {name for name, m in COMMANDS.items() if m == module}


def test_every_module_with_commands_is_in_the_table() -> None:
    here = Path(cli.__file__).parent
    found = {f"p2pinfer.cli.{p.stem}" for p in here.glob("*_cmds.py")}
    registering = {m for m in found if hasattr(importlib.import_module(m), "register")}
    assert registering == set(COMMAND_MODULES)


def _modules_after(*argv: str) -> tuple[int, set[str], str]:
    """Run `p2pinfer argv` in a fresh interpreter: its exit code, the top-level packages it
    had imported by then, and its output."""
    probe = (
        "import sys\n"
        f"sys.argv = ['p2pinfer', *{list(argv)!r}]\n"
        "from p2pinfer.cli.main import main\n"
        "try:\n    main()\n"
        "except SystemExit as exc:\n    code = exc.code or 0\n"
        "else:\n    code = 0\n"
        "print('\\nMODULES', ' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
        "print('CODE', code)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=True)
    lines = done.stdout.splitlines()
    modules = set(next(li for li in lines if li.startswith("MODULES")).split()[1:])
    code = int(next(li for li in lines if li.startswith("CODE")).split()[1])
    return code, modules, done.stdout


def test_a_wallet_command_does_not_load_the_network_stack() -> None:
    code, modules, out = _modules_after("wallet", "--help")
    assert code == 0 and "Usage" in out
    assert "libp2p" not in modules


def test_the_root_help_still_lists_every_command() -> None:
    code, _, out = _modules_after("--help")
    assert code == 0
    rows = {line.strip("│ ").split(" ")[0] for line in out.splitlines() if "│" in line}
    assert set(COMMANDS) <= rows


def test_an_unknown_command_is_refused_with_the_full_list() -> None:
    code, _, _ = _modules_after("no-such-command")
    assert code == 2
