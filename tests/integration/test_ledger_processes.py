"""The ledger on real SQLite files with real processes: crashes and concurrent writers."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pinfer.errors import LedgerError
from p2pinfer.market.ledger import Ledger
from tests.market_support import fixed_identity

ROOT = Path(__file__).resolve().parents[2]
ME = fixed_identity(3)
TIMEOUT = 60


def writer(mode: str, path: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.ledger_writer",
            mode,
            str(path),
            ME.seed.hex(),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def test_a_writer_killed_inside_a_transaction_leaves_no_partial_entry(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    proc = writer("crash", path)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 42, err
    assert out.splitlines() == ["committed 3"]
    with Ledger.open(path, ME) as led:
        report = led.verify(expected_signer=ME.public_key)
        assert report.ok and report.verified == 3
        assert [e.kind for e in led.entries()] == ["faucet"] * 3
        conn = sqlite3.connect(str(path))
        assert conn.execute("SELECT COUNT(*) FROM postings WHERE seq > 3").fetchone()[0] == 0
        conn.close()
        # The chain continues where the last committed entry left it.
        assert led.record_faucet(ME.public_key, 1).seq == 4
        assert led.verify().ok


def test_a_writer_killed_at_a_random_moment_loses_nothing_it_committed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger.open(path, ME).close()
    proc = writer("loop", path, "k", "0")
    assert proc.stdout is not None
    committed = []
    deadline = time.monotonic() + TIMEOUT
    while len(committed) < 40 and time.monotonic() < deadline:
        committed.append(int(proc.stdout.readline()))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)
    assert len(committed) == 40
    with Ledger.open(path, ME) as led:
        report = led.verify(expected_signer=ME.public_key)
        assert report.ok
        assert report.verified >= committed[-1]  # everything reported committed is there
        assert [e.seq for e in led.entries()] == list(range(1, report.verified + 1))


def test_two_processes_writing_at_once_queue_and_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger.open(path, ME).close()
    procs = [writer("loop", path, tag, "60") for tag in ("a", "b")]
    for proc in procs:
        _, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, err
    with Ledger.open(path, ME) as led:
        entries = led.entries()
        assert [e.seq for e in entries] == list(range(1, 121))
        grants = {e.body.grant_id for e in entries}  # type: ignore[union-attr]
        assert grants == {f"{t}-{i}" for t in "ab" for i in range(60)}
        assert led.verify(expected_signer=ME.public_key).ok


def test_a_second_writer_waits_for_the_first_to_commit(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with Ledger.open(path, ME) as led:
        led.record_faucet(ME.public_key, 5)
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer in the middle of its transaction
    proc = writer("one", path)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "start"
    time.sleep(0.5)  # hold the write lock for a while: the child must wait, not fail
    released = time.monotonic_ns()
    holder.execute("COMMIT")
    holder.close()
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    done = int(out.split()[-1])
    assert done >= released
    with Ledger.open(path, ME) as led:
        assert led.head().seq == 2 and led.verify().ok


def test_a_writer_that_cannot_get_the_lock_in_time_fails_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with Ledger.open(path, ME, busy_timeout_ms=100) as led:
        holder = sqlite3.connect(str(path), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(LedgerError, match="busy"):
            led.record_faucet(ME.public_key, 1)
        holder.execute("ROLLBACK")
        holder.close()
        led.record_faucet(ME.public_key, 1)
        assert led.head().seq == 1 and led.verify().ok
