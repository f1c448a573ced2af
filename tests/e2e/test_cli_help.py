"""`p2pinfer node --help` as a user runs it (a subprocess): exit 0 and the whole text."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_node_help_exits_0_and_shows_the_gateway_rate_limit_text() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "p2pinfer", "node", "--help"], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert "--gateway-rate-limit" in r.stdout
    assert "Requests per second per key, RATE[/BURST]; 0: no limit" in r.stdout
    assert "Traceback" not in r.stderr
