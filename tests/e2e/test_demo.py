"""scripts/demo does the main job: a 3-node testnet with its local chain answers, names its
provider and price, shows the job paid on chain (channel deposit, voucher, redemption
split, totalSupply), and is stopped afterwards."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from p2pinfer.testnet.processes import pid_alive, read_node_status
from tests.support.backends import REPO_ROOT, needs_engine

pytestmark = [pytest.mark.network, pytest.mark.engine, needs_engine]


def test_the_demo_asks_a_three_node_testnet_and_stops_it(tmp_path: Path) -> None:
    env = {**os.environ, "P2PINFER_PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    run = subprocess.run([str(REPO_ROOT / "scripts" / "demo")], capture_output=True, text=True,
                         env=env, timeout=400, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "The capital of France is Paris." in out
    assert "served by  node" in out and "micro-credits" in out and "charge job" in out
    assert "stopped 3 node(s)" in out
    assert "deposit 100000000 micro-credits (100.000000 credits) on chain" in out
    assert "(the consumer)" in out and "voucher    cumulative" in out
    # The provider redeems within 20 s (+ a 10 s check); the demo waits up to 60 s.
    assert re.search(r"redeemed   \d+ micro-credits in block \d+: provider \d+ · pool \d+ · "
                     r"treasury \d+ · burned \d+", out), out
    assert "supply     totalSupply" in out
    [directory] = list(tmp_path.glob("p2pinfer-demo.*"))
    assert not (directory / "testnet.json").exists()
    for home in sorted(directory.glob("node*")):
        status = read_node_status(home)
        assert status is not None and not pid_alive(status.pid), home
