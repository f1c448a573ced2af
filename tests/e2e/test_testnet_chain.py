"""`p2pinfer testnet up --chain`: the local chain runs as one more testnet process, every
node's derived account is funded and each provider has stake locked, the nodes are
pointed at the chain, and `testnet down` stops the chain too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from p2pinfer import identity, testnet
from p2pinfer.settle import wallet
from p2pinfer.testnet_chain import CONSUMER_CREDITS, PROVIDER_STAKE, node_accepts_chain_flags

pytestmark = [pytest.mark.network]
ROOT = Path(__file__).resolve().parents[2]


def p2pinfer(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "p2pinfer", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)


def test_testnet_up_with_a_chain_funds_and_stakes_every_node(tmp_path: Path) -> None:
    up = p2pinfer("testnet", "up", "--nodes", "2", "--dir", str(tmp_path), "--backend",
                  "fake-stream=200", "--no-gateway", "--no-benchmark", "--chain",
                  "--timeout", "90")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "chain rpc=http://127.0.0.1:" in up.stdout
        spec = testnet.chain_of(tmp_path)
        assert spec is not None and testnet.pid_alive(spec.pid)
        target = wallet.resolve_target(None, None, spec.deployment_file)
        for node in testnet.status(tmp_path):
            account = wallet.load_account(None, Path(node.home))
            held = wallet.connect(target, account).balances()
            assert (held.credits, held.locked_stake) == (CONSUMER_CREDITS, PROVIDER_STAKE)
            cmdline = Path(f"/proc/{node.pid}/cmdline").read_bytes().split(b"\0")
            assert (b"--chain-rpc" in cmdline) == node_accepts_chain_flags()
            assert identity.key_path(Path(node.home)).exists()
    finally:
        down = p2pinfer("testnet", "down", "--dir", str(tmp_path), timeout=60)
    assert "and the chain" in down.stdout, down.stdout + down.stderr
    assert not testnet.pid_alive(spec.pid)
