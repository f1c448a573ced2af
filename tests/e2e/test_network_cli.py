"""The network commands' errors as a user meets them: one line, the documented exit code."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.network_helpers import p2pinfer, relay_node


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_ask_with_no_peer_to_join_is_a_usage_error(tmp_path: Path) -> None:
    run = p2pinfer("ask", "hi", "--home", str(tmp_path))
    assert run.returncode == 2
    assert "--bootstrap" in one_line_error(run.stderr)


def test_a_bad_bootstrap_address_is_a_usage_error(tmp_path: Path) -> None:
    run = p2pinfer("ask", "hi", "--home", str(tmp_path), "--bootstrap", "/ip4/127.0.0.1/tcp/1")
    assert run.returncode == 2
    assert "/p2p/" in one_line_error(run.stderr)


def test_a_bad_fault_is_refused_before_the_node_starts(tmp_path: Path) -> None:
    run = p2pinfer("node", "--home", str(tmp_path), "--fault", "explode", "--backend", "none")
    assert run.returncode == 2
    assert "crash-after=N" in one_line_error(run.stderr)


def test_status_of_a_directory_without_a_testnet_is_a_testnet_error(tmp_path: Path) -> None:
    run = p2pinfer("testnet", "status", "--dir", str(tmp_path))
    assert run.returncode == 13
    one_line_error(run.stderr)


@pytest.mark.network
def test_a_model_nobody_serves_is_no_providers(tmp_path: Path) -> None:
    with relay_node(tmp_path / "lonely", None) as addr:
        run = p2pinfer("ask", "hi", "--model", "nobody:1b", "--bootstrap", addr,
                       "--home", str(tmp_path / "c"), "--faucet", "100000", "--timeout", "6")
    assert run.returncode == 7
    assert "nobody:1b" in one_line_error(run.stderr)


@pytest.mark.network
def test_a_consumer_without_credit_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    with relay_node(tmp_path / "lonely", None) as addr:
        run = p2pinfer("ask", "hi", "--bootstrap", addr, "--home", str(tmp_path / "poor"))
    assert run.returncode == 12
    assert "micro-credits" in one_line_error(run.stderr)
