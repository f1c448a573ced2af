"""Attack "bad ledger": `p2pinfer node` on a ledger that fails `ledger --verify` refuses to
start (exit 11, one line naming the entry) instead of trusting forged credit in it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pinfer import identity
from p2pinfer.market import entries as E
from p2pinfer.market.checkpoint import checkpoint_path
from p2pinfer.market.ledger import Ledger, ledger_path
from tests.market_support import fixed_identity, forge_faucet_entry, populate, raw_connect

ROOT = Path(__file__).resolve().parents[2]
NODE_ARGS = ("--backend", "none", "--no-gateway", "--listen", "/ip4/127.0.0.1/tcp/0")


def env() -> dict[str, str]:
    e = {**os.environ, "PYTHONPATH": str(ROOT)}
    e.pop("P2PINFER_HOME", None)
    return e


def node(home: Path, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2pinfer", "node", "--home", str(home),
                           *NODE_ARGS], capture_output=True, text=True, env=env(), cwd=ROOT,
                          timeout=timeout_s, check=False)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "node"
    r = subprocess.run([sys.executable, "-m", "p2pinfer", "init", "--home", str(h)],
                       capture_output=True, text=True, env=env(), cwd=ROOT, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr
    with Ledger.open(ledger_path(h), identity.load(h)) as led:
        populate(led, identity.load(h))
    return h


def forge_faucet_credit(home: Path, amount: int = 10**12) -> None:
    """Credit this node with a faucet grant signed by the forger's key (the node's key is
    not the forger's to use)."""
    me = identity.load(home)
    forge_faucet_entry(ledger_path(home), me, fixed_identity(66), me.public_key, amount)


def assert_refused(r: subprocess.CompletedProcess[str], home: Path, reason: str) -> None:
    assert r.returncode == 11, (r.returncode, r.stderr[-2000:])
    [line] = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: ledger {ledger_path(home)} ")
    assert reason in line, line
    assert "Traceback" not in r.stderr
    assert not (home / "node.json").exists()  # it never got as far as listening


def run_until_listening(home: Path) -> None:
    """Start the node, wait for node.json, stop it with SIGTERM (exit 0)."""
    proc = subprocess.Popen([sys.executable, "-m", "p2pinfer", "node", "--home", str(home),
                             *NODE_ARGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env(), cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not (home / "node.json").exists():
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the node did not start within 60 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-2000:]
        assert "ledger verified" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (home / "node.json").unlink()


def test_bad_ledger_with_forged_faucet_credit_makes_the_node_refuse_to_start(home: Path) -> None:
    forge_faucet_credit(home)
    r = node(home)
    assert_refused(r, home, "fails verification: entry 8: signed by a key that does not own")


def test_bad_ledger_with_a_broken_hash_makes_the_node_refuse_to_start(home: Path) -> None:
    conn = raw_connect(ledger_path(home))
    (body,) = conn.execute("SELECT body FROM entries WHERE seq = 4").fetchone()
    with conn:
        conn.execute("UPDATE entries SET body = ? WHERE seq = 4",
                     (body.replace(b"bme", b"bmf"),))
    conn.close()
    assert_refused(node(home), home, "entry 4: entry_hash is not sha256(prev_hash || body)")


def test_bad_ledger_that_no_longer_matches_its_checkpoint_makes_the_node_refuse(
    home: Path,
) -> None:
    run_until_listening(home)  # a good start: verified in full, checkpoint written at 7
    assert json.loads(checkpoint_path(home).read_text())["seq"] == 7
    conn = raw_connect(ledger_path(home))
    with conn:  # credit slipped in under an entry the checkpoint already covers
        conn.execute("INSERT INTO postings VALUES (1, ?, 1000000000000)",
                     (E.peer_account(identity.load(home).public_key).replace("peer:", "peer:x"),))
    conn.close()
    assert_refused(node(home), home, "does not match its checkpoint: the balances as of entry 7")
    # `ledger --verify` (the full walk) agrees the ledger is bad.
    r = subprocess.run([sys.executable, "-m", "p2pinfer", "ledger", "--verify", "--home",
                        str(home)], capture_output=True, text=True, env=env(), cwd=ROOT,
                       timeout=60, check=False)
    assert r.returncode == 11 and "entry 1: postings do not match the body" in r.stderr
