"""Start-up verification from a signed checkpoint: fast on a long ledger, and every
tampering the full walk finds is still found (or the ledger is refused)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2pinfer.errors import LedgerIntegrityError
from p2pinfer.identity import NodeIdentity
from p2pinfer.market.checkpoint import checkpoint_path, read_checkpoint, verify_from_checkpoint
from p2pinfer.market.ledger import Ledger, ledger_path
from tests.market_support import fixed_identity, forge_faucet_entry, populate, raw_connect

ME = fixed_identity(1)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    with Ledger.open(ledger_path(tmp_path), ME) as led:
        populate(led, ME)
    return tmp_path


def check(home: Path, me: NodeIdentity = ME) -> tuple[int, int, int]:
    with Ledger.open(ledger_path(home), me) as led:
        done = verify_from_checkpoint(led, me, checkpoint_path(home))
    return done.checkpoint_seq, done.verified, done.head_seq


def grant(home: Path, n: int, tag: str = "g") -> None:
    with Ledger.open(ledger_path(home), ME) as led:
        for i in range(n):
            led.record_faucet(ME.public_key, 1, grant_id=f"{tag}-{i}")


def test_the_first_check_walks_everything_and_the_next_only_new_entries(home: Path) -> None:
    assert check(home) == (0, 7, 7)
    assert read_checkpoint(checkpoint_path(home), ME.public_key) is not None
    assert check(home) == (7, 0, 7)
    grant(home, 3)
    assert check(home) == (7, 3, 10)
    assert check(home) == (10, 0, 10)


def test_an_empty_ledger_verifies_and_writes_no_checkpoint(tmp_path: Path) -> None:
    with Ledger.open(ledger_path(tmp_path), ME):
        pass
    assert check(tmp_path) == (0, 0, 0)
    assert not checkpoint_path(tmp_path).exists()


def test_a_forged_credit_entry_after_the_checkpoint_is_refused(home: Path) -> None:
    check(home)
    forger = fixed_identity(66)
    seq = forge_faucet_entry(ledger_path(home), ME, forger, forger.public_key, 10**12)
    assert seq == 8
    with pytest.raises(LedgerIntegrityError, match="entry 8: signed by a key that does not own"):
        check(home)


def test_a_posting_slipped_in_before_the_checkpoint_is_refused(home: Path) -> None:
    check(home)
    conn = raw_connect(ledger_path(home))
    with conn:  # forged credit on an old entry: the walk after the checkpoint never sees it
        conn.execute("INSERT INTO postings VALUES (1, 'peer:forger', 1000000000)")
    conn.close()
    with pytest.raises(LedgerIntegrityError, match="balances as of entry 7 changed"):
        check(home)


def test_a_changed_posting_amount_before_the_checkpoint_is_refused(home: Path) -> None:
    check(home)
    conn = raw_connect(ledger_path(home))
    with conn:
        conn.execute("UPDATE postings SET amount = amount * 1000 WHERE seq = 1 AND amount > 0")
    conn.close()
    with pytest.raises(LedgerIntegrityError, match="does not match its checkpoint"):
        check(home)


def test_a_changed_slash_before_the_checkpoint_is_refused(home: Path) -> None:
    check(home)
    conn = raw_connect(ledger_path(home))
    (body,) = conn.execute("SELECT body FROM entries WHERE kind = 'slash'").fetchone()
    with conn:
        conn.execute("UPDATE entries SET body = ? WHERE kind = 'slash'",
                     (body.replace(b"inconsistent", b"INCONSISTENT"),))
    conn.close()
    with pytest.raises(LedgerIntegrityError, match="stake or slash entry"):
        check(home)


def test_a_broken_hash_after_the_checkpoint_is_refused(home: Path) -> None:
    check(home)
    grant(home, 2)
    conn = raw_connect(ledger_path(home))
    (body,) = conn.execute("SELECT body FROM entries WHERE seq = 9").fetchone()
    with conn:
        conn.execute("UPDATE entries SET body = ? WHERE seq = 9", (body.replace(b"g-1", b"g-9"),))
    conn.close()
    with pytest.raises(LedgerIntegrityError, match=r"entry 9: entry_hash is not sha256"):
        check(home)


def test_a_truncated_ledger_no_longer_matches_its_checkpoint(home: Path, tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite3"
    old.write_bytes(ledger_path(home).read_bytes())  # a backup, taken before 2 more grants
    grant(home, 2)
    check(home)
    ledger_path(home).write_bytes(old.read_bytes())  # rolled back: 2 grants spent "again"
    for extra in ("-wal", "-shm"):
        Path(str(ledger_path(home)) + extra).unlink(missing_ok=True)
    with pytest.raises(LedgerIntegrityError, match="entry 9 is missing"):
        check(home)


def test_a_checkpoint_signed_by_another_key_or_edited_is_refused(home: Path) -> None:
    check(home)
    path = checkpoint_path(home)
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, "seq": 3}))
    with pytest.raises(LedgerIntegrityError, match="not signed by this node's key"):
        check(home)
    path.write_text("{not json")
    with pytest.raises(LedgerIntegrityError, match="unreadable"):
        check(home)
    path.write_text(json.dumps(saved))
    assert check(home) == (7, 0, 7)


def test_deleting_the_checkpoint_falls_back_to_the_full_walk(home: Path) -> None:
    check(home)
    conn = raw_connect(ledger_path(home))
    with conn:
        conn.execute("INSERT INTO postings VALUES (1, 'peer:forger', 1000000000)")
    conn.close()
    checkpoint_path(home).unlink()
    with pytest.raises(LedgerIntegrityError, match="entry 1: postings do not match the body"):
        check(home)


@pytest.mark.parametrize("new_entries", [0, 2])
def test_a_running_balance_raised_behind_the_checkpoint_is_refused(home: Path,
                                                                    new_entries: int) -> None:
    # The kept balance is what a spend is checked against: raised by hand, with or
    # without entries after the checkpoint, it no longer equals the account's postings.
    check(home)
    grant(home, new_entries)
    conn = raw_connect(ledger_path(home))
    with conn:
        conn.execute("UPDATE account_balances SET balance = balance + 10 WHERE account = ?",
                     (f"peer:{ME.peer_id}",))
    conn.close()
    with pytest.raises(LedgerIntegrityError, match=f"running balance of peer:{ME.peer_id}"):
        check(home)


def test_a_checkpointed_start_reads_the_postings_once(home: Path) -> None:
    # A long ledger's start is bound by passes over its postings (bench/ledger_startup.py):
    # the checkpoint's balances, the running-balance check and the new checkpoint all
    # come from one.
    check(home)
    grant(home, 3)
    passes: list[str] = []
    with Ledger.open(ledger_path(home), ME) as led:
        led._conn.set_trace_callback(
            lambda sql: passes.append(sql) if "GROUP BY" in sql else None)
        done = verify_from_checkpoint(led, ME, checkpoint_path(home))
    assert (done.checkpoint_seq, done.verified, done.head_seq) == (7, 3, 10)
    assert len(passes) == 1 and "FROM postings" in passes[0]
    assert check(home) == (10, 0, 10)  # the checkpoint it wrote holds
