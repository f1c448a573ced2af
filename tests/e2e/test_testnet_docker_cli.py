"""`p2pinfer testnet ... --docker` as a user runs it: refusals in one line, before Docker
is asked for anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def p2pinfer(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "p2pinfer", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=ROOT)


def test_up_docker_with_fewer_than_four_nodes_is_refused_in_one_line() -> None:
    proc = p2pinfer("testnet", "up", "--docker", "--nodes", "3")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --nodes must be at least 4 (bootstrap, a provider, a validator, a consumer)"
    ]


def test_a_project_name_compose_cannot_take_is_refused_in_one_line() -> None:
    for command in (["up", "--nodes", "5"], ["status"], ["down"]):
        proc = p2pinfer("testnet", *command, "--docker", "--project", "My Net")
        assert proc.returncode == 2, command
        assert proc.stderr.strip().splitlines() == [
            "error: bad docker project name 'My Net': lowercase letters, digits, '-' and '_'"
        ], command
