"""`p2pinfer ledger` and `p2pinfer reputation` as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from p2pinfer import identity
from p2pinfer.market.ledger import Ledger, ledger_path
from p2pinfer.verify.reputation import Outcome
from p2pinfer.verify.reputation_store import ReputationBook, reputation_path
from tests.market_support import populate, raw_connect

ROOT = Path(__file__).resolve().parents[2]


def p2pinfer(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("P2PINFER_HOME", None)
    return subprocess.run([sys.executable, "-m", "p2pinfer", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60, check=False)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "node"
    assert p2pinfer("init", "--home", str(h)).returncode == 0
    with Ledger.open(ledger_path(h), identity.load(h)) as led:
        populate(led, identity.load(h))
    return h


def test_verify_passes_on_a_good_ledger(home: Path) -> None:
    r = p2pinfer("ledger", "--verify", "--home", str(home))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ledger ok: 7 entries verified, head ")


def test_verify_names_the_tampered_entry_on_one_line_and_exits_11(home: Path) -> None:
    conn = raw_connect(ledger_path(home))
    (body,) = conn.execute("SELECT body FROM entries WHERE seq = 4").fetchone()
    body = body.replace(b"bme", b"bmf")
    with conn:
        conn.execute("UPDATE entries SET body = ? WHERE seq = 4", (body,))
    conn.close()
    r = p2pinfer("ledger", "--verify", "--home", str(home))
    assert r.returncode == 11
    assert r.stderr == "error: entry 4: entry_hash is not sha256(prev_hash || body)\n"
    r = p2pinfer("ledger", "--verify", "--json", "--home", str(home))
    assert r.returncode == 11
    report = json.loads(r.stdout)
    assert report["ok"] is False and report["bad"]["seq"] == 4 and report["verified"] == 3


def test_a_ledger_copied_from_another_node_does_not_verify(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    assert p2pinfer("init", "--home", str(other)).returncode == 0
    shutil.copy(ledger_path(home), ledger_path(other))
    r = p2pinfer("ledger", "--verify", "--home", str(other))
    assert r.returncode == 11
    assert r.stderr.startswith("error: entry 0: ")


def test_ledger_shows_balances_and_recent_entries(home: Path) -> None:
    r = p2pinfer("ledger", "--json", "--limit", "5", "--home", str(home))
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["head"]["seq"] == 7
    assert [e["seq"] for e in shown["entries"]] == [7, 6, 5, 4, 3]
    balances = {b["account"]: b["amount"] for b in shown["balances"]}
    assert sum(balances.values()) == 0
    assert balances["faucet"] == -5_001_000
    assert shown["owner"] == identity.load(home).peer_id
    table = p2pinfer("ledger", "--home", str(home))
    assert table.returncode == 0 and "balances" in table.stdout and "charge" in table.stdout


def test_ledger_without_a_ledger_file_says_so(tmp_path: Path) -> None:
    r = p2pinfer("ledger", "--verify", "--home", str(tmp_path))
    assert r.returncode == 10
    assert r.stderr.startswith("error: no ledger at ") and r.stderr.count("\n") == 1


def test_reputation_lists_peers(tmp_path: Path) -> None:
    r = p2pinfer("reputation", "--json", "--home", str(tmp_path))
    assert r.returncode == 0 and json.loads(r.stdout) == {"peers": []}
    with ReputationBook.open(reputation_path(tmp_path)) as book:
        book.record("12D3KooWpeer", Outcome.CHECK_FAILED)
    r = p2pinfer("reputation", "--json", "--home", str(tmp_path))
    (peer,) = json.loads(r.stdout)["peers"]
    assert peer["peer_id"] == "12D3KooWpeer" and peer["score_pm"] == 760
    assert peer["breaker"] == "closed" and peer["probation"] is True
    table = p2pinfer("reputation", "--home", str(tmp_path))
    assert table.returncode == 0 and "0.760" in table.stdout
