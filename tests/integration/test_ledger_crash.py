"""Crash test (issue 6): a process recording receipted jobs is SIGKILLed at random
moments, 50 times over one ledger; after every kill `p2pinfer ledger --verify` passes
and each job it reported committed is charged exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from p2pinfer.market.ledger import Ledger
from tests.market_support import fixed_identity

ROOT = Path(__file__).resolve().parents[2]
ME = fixed_identity(3)
RUNS = 50
JOBS = 10_000


def test_fifty_sigkills_lose_no_receipted_job_and_count_none_twice(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    path = home / "ledger.sqlite3"  # where `p2pinfer ledger --home` finds it
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(6)
    committed: set[int] = set()
    for run in range(RUNS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.charge_writer", str(path), str(JOBS)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        assert proc.stdout is not None
        # Kill after a random number of new commits (0: possibly before the first one)
        # plus a random delay, so kills land inside and between transactions.
        wanted = rng.randrange(0, 4)
        deadline = time.monotonic() + 30
        for _ in range(wanted):
            line = proc.stdout.readline()
            assert line, f"run {run}: writer died: {proc.stderr.read() if proc.stderr else ''}"
            committed.add(int(line))
        time.sleep(rng.random() * 0.02)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        committed.update(int(x) for x in out.split())  # printed before the kill landed
        assert time.monotonic() < deadline
        with Ledger.open(path, ME) as led:
            report = led.verify(expected_signer=ME.public_key)
            assert report.ok, f"run {run}: {report}"
            charged = [e.body.job_id for e in led.entries()  # type: ignore[attr-defined]
                       if e.kind == "charge"]
        assert len(charged) == len(set(charged)), f"run {run}: a job was charged twice"
        ids = {int.from_bytes(j, "big") for j in charged} if charged else set()
        assert committed <= ids, f"run {run}: receipted jobs missing"
    # The CLI's check agrees.
    cli = subprocess.run(
        [sys.executable, "-m", "p2pinfer", "ledger", "--verify", "--home", str(home)],
        capture_output=True, text=True, env={**env, "P2PINFER_HOME": str(home)}, timeout=60)
    assert cli.returncode == 0, cli.stderr + cli.stdout
