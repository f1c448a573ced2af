"""The interim demo (scripts/protocol_demo.py) runs a whole job and says it is in memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_runs_a_job_end_to_end_and_says_it_is_in_memory() -> None:
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "protocol_demo.py")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "IN-MEMORY" in out and "No network here" in out
    assert "FAILED" not in out
    assert "'The capital of France is Paris.'" in out
    assert "a tampered copy is refused (SignatureError" in out
    assert "rejected with code 'replayed'" in out
