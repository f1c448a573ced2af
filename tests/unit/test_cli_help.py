"""Every command's --help renders (typer shows help through rich, which reads "[...]" as
markup: "RATE[/BURST]" once crashed `p2pinfer node --help`)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from p2pinfer.cli.main import _register_all, app

_register_all()
COMMANDS = sorted({c.name or "" for c in app.registered_commands} | {
    g.name or "" for g in app.registered_groups})


@pytest.mark.parametrize("command", COMMANDS)
def test_every_commands_help_exits_0(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_node_help_shows_the_rate_limit_syntax_as_written() -> None:
    result = CliRunner().invoke(app, ["node", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "RATE[/BURST]" in result.output
