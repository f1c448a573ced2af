"""`p2pinfer node --advert-ttl`: how long a node's advert stays valid in others' catalogs."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from p2pinfer.cli.main import _register_all, app
from p2pinfer.errors import UsageError
from p2pinfer.node.config import NodeConfig, check_config
from p2pinfer.protocol import MAX_ADVERT_TTL_MS

_register_all()


@pytest.mark.parametrize(("interval_s", "ttl_ms"), [
    (30.0, 59_999),  # lapses between two republications
    (5.0, MAX_ADVERT_TTL_MS + 1),  # over what any peer accepts
    (0.0, 120_000),  # no interval at all
])
def test_a_ttl_that_cannot_keep_the_advert_alive_is_refused(
    interval_s: float, ttl_ms: int, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="--advert"):
        check_config(NodeConfig(home=tmp_path, advert_interval_s=interval_s,
                                advert_ttl_ms=ttl_ms))


def test_the_flags_reach_the_node_config(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[NodeConfig] = []

    def fake_run(config: NodeConfig, **_: object) -> None:  # no node is started
        seen.append(config)

    monkeypatch.setattr("p2pinfer.cli.node_cmds.run_node", fake_run)
    monkeypatch.setattr("p2pinfer.cli.node_cmds.trio.run", lambda fn: fn())
    runner = CliRunner()
    result = runner.invoke(app, ["node", "--home", str(tmp_path), "--advert-interval", "5",
                                 "--advert-ttl", "30"])
    assert result.exit_code == 0, result.output
    assert (seen[0].advert_interval_s, seen[0].advert_ttl_ms) == (5.0, 30_000)
    refused = runner.invoke(app, ["node", "--home", str(tmp_path), "--advert-ttl", "45"])
    assert isinstance(refused.exception, UsageError)  # main() prints it in one line, exit 2
    assert "--advert-ttl must be at least twice" in str(refused.exception)
