"""`p2pinfer node`'s relay flags reach the node's config, and a bad relay address is
refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from p2pinfer.cli.main import _register_all, app
from p2pinfer.errors import UsageError
from p2pinfer.identity import NodeIdentity
from p2pinfer.node.config import NodeConfig, check_config
from p2pinfer.node.run import host_config

_register_all()

RELAY = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWGm67iRfrBserxQK6ALed4ZewiNUh7xYSh6o6VMuRdgFN"


def test_a_relay_address_without_its_peer_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="/p2p/<PeerID>"):
        check_config(NodeConfig(home=tmp_path, reserve_relays=("/ip4/127.0.0.1/tcp/4001",)))
    check_config(NodeConfig(home=tmp_path, reserve_relays=(RELAY,)))


@pytest.mark.parametrize(("flags", "mode"), [
    ([], "auto"), (["--relay"], "on"), (["--no-relay"], "off")])
def test_relay_flags_choose_the_relay_mode(flags: list[str], mode: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[NodeConfig] = []

    def fake_run(config: NodeConfig, **_: object) -> None:  # no node is started
        seen.append(config)

    monkeypatch.setattr("p2pinfer.cli.node_cmds.run_node", fake_run)
    monkeypatch.setattr("p2pinfer.cli.node_cmds.trio.run", lambda fn: fn())
    result = CliRunner().invoke(app, ["node", "--home", str(tmp_path), *flags,
                                      "--reserve-relay", RELAY])
    assert result.exit_code == 0, result.output
    assert seen[0].relay == mode and seen[0].reserve_relays == (RELAY,)


@pytest.mark.parametrize(("flags", "before", "behind"), [
    ([], False, True), (["--dcutr"], True, True), (["--no-dcutr-behind"], False, False)])
def test_dcutr_reaches_the_hosts_relay_client(flags: list[str], before: bool, behind: bool,
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`node --dcutr`: jobs this node sends (its gateway's) try a direct connection after
    a relayed dial, as `ask --dcutr` does; by default, behind the first relayed job instead
    (tests/integration/test_jobs_relayed.py)."""
    seen: list[NodeConfig] = []
    monkeypatch.setattr("p2pinfer.cli.node_cmds.run_node",
                        lambda config, **_: seen.append(config))
    monkeypatch.setattr("p2pinfer.cli.node_cmds.trio.run", lambda fn: fn())
    result = CliRunner().invoke(app, ["node", "--home", str(tmp_path), *flags])
    assert result.exit_code == 0, result.output
    relay_client = host_config(seen[0], NodeIdentity.generate()).relay_client
    assert relay_client.dcutr is before and relay_client.dcutr_behind is behind
