"""`--min-tokens-per-s` on `node` and `ask`: the consumer's pace floor (attack 33)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from p2pinfer.cli import ask_cmds
from p2pinfer.cli.main import _register_all, app
from p2pinfer.jobs.job_types import ClientConfig
from p2pinfer.node.config import NodeConfig
from p2pinfer.node.session import SessionConfig

_register_all()


def test_node_passes_the_floor_to_its_client_and_refuses_a_negative_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[NodeConfig] = []
    monkeypatch.setattr("p2pinfer.cli.node_cmds.run_node",
                        lambda config, **_: seen.append(config))  # no node is started
    monkeypatch.setattr("p2pinfer.cli.node_cmds.trio.run", lambda fn: fn())
    runner = CliRunner()
    for args, floor in (([], ClientConfig.min_tokens_per_s), (["--min-tokens-per-s", "0.2"], 0.2),
                        (["--min-tokens-per-s", "0"], 0.0)):
        result = runner.invoke(app, ["node", "--home", str(tmp_path), *args])
        assert result.exit_code == 0, result.output
        assert seen[-1].client.min_tokens_per_s == floor
    refused = runner.invoke(app, ["node", "--home", str(tmp_path), "--min-tokens-per-s", "-1"])
    assert refused.exit_code == 2 and "--min-tokens-per-s" in refused.output
    # Charge proofs show a job's prompt to every node: only when the operator says so.
    assert seen[-1].client.gossip_charge_proofs is False
    result = runner.invoke(app, ["node", "--home", str(tmp_path), "--gossip-charge-proofs"])
    assert result.exit_code == 0 and seen[-1].client.gossip_charge_proofs is True


def test_ask_passes_the_floor_to_its_client(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[SessionConfig] = []
    real = ask_cmds.session_config

    def recorded(*args: Any, **kwargs: Any) -> SessionConfig:
        seen.append(real(*args, **kwargs))
        return seen[-1]

    def no_host(_: object) -> None:
        raise SystemExit(0)  # nothing is started

    monkeypatch.setattr(ask_cmds, "session_config", recorded)
    monkeypatch.setattr(ask_cmds.trio, "run", no_host)
    peer = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWSjZ7iCnPqahDQYUT9wBKgfLLJcCTq9dRqMSiGBXsJuv3"
    result = CliRunner().invoke(app, ["ask", "hi", "--home", str(tmp_path), "--bootstrap", peer,
                                      "--min-tokens-per-s", "0.5"])
    assert result.exit_code == 0, result.output
    assert seen[0].client.min_tokens_per_s == 0.5


def test_a_testnet_runs_its_nodes_with_the_pace_floor_it_was_given() -> None:
    from p2pinfer.testnet import processes as testnet

    plain = testnet._node_command(Path("h"), None, "fake-stream=50", [], None, True,
                                  testnet.NodeOptions(), [])
    off = testnet._node_command(Path("h"), None, "fake-stream=50", [], None, True,
                                testnet.NodeOptions(min_tokens_per_s=0.0), [])
    assert "--min-tokens-per-s" not in plain
    assert off[off.index("--min-tokens-per-s") + 1] == "0"
