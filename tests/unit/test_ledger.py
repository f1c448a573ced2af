"""Ledger invariants on real SQLite files: balances, chain, tamper evidence, idempotency."""

from __future__ import annotations

import itertools
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pinfer.errors import (
    DuplicateEntryError,
    InsufficientCreditError,
    LedgerError,
    LedgerIntegrityError,
    SignatureError,
    ValidationError,
)
from p2pinfer.identity import NodeIdentity
from p2pinfer.market.entries import ChargeBody, Entry, peer_account
from p2pinfer.market.ledger import Ledger
from p2pinfer.market.split import BME, SEED, split
from p2pinfer.market.stake import sign_stake
from tests.market_support import charge_input, fixed_identity, populate, raw_connect

ME = fixed_identity(1)
PEERS = [fixed_identity(n) for n in (1, 2, 3)]
SQL_SETTINGS = settings(max_examples=25, deadline=None,
                        suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.open(tmp_path / "ledger.sqlite3", ME, clock=lambda: 1_700_000_000_000) as led:
        yield led


def _tmp_ledger() -> tuple[tempfile.TemporaryDirectory[str], Ledger]:
    tmp = tempfile.TemporaryDirectory()
    return tmp, Ledger.open(Path(tmp.name) / "ledger.sqlite3", ME)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("faucet"), st.integers(0, 2), st.integers(0, 10**9)),
        st.tuples(st.just("charge"), st.integers(0, 2), st.integers(0, 2),
                  st.integers(0, 10**9), st.sampled_from(["seed", "bme"]),
                  st.integers(0, 1000)),
    ),
    min_size=1, max_size=12,
)


@SQL_SETTINGS
@given(ops=operations)
def test_balances_equal_the_sum_of_the_entries(ops: list[tuple[object, ...]]) -> None:
    tmp, led = _tmp_ledger()
    expected: dict[str, int] = {}

    def move(account: str, amount: int) -> None:
        expected[account] = expected.get(account, 0) + amount

    with tmp, led:
        for job, op in enumerate(ops):
            if op[0] == "faucet":
                _, who, amount = op
                assert isinstance(who, int) and isinstance(amount, int)
                led.record_faucet(PEERS[who].public_key, amount)
                move("faucet", -amount)
                move(peer_account(PEERS[who].public_key), amount)
            else:
                _, prov, cons, amount, preset_name, quality = op
                assert isinstance(prov, int) and isinstance(cons, int)
                assert isinstance(amount, int) and isinstance(quality, int)
                preset = SEED if preset_name == "seed" else BME
                led.record_charge(charge_input(job, PEERS[prov], PEERS[cons], amount), preset,
                                  quality_pm=quality)
                s = split(amount, preset, quality)
                move(peer_account(PEERS[cons].public_key), -amount)
                move(peer_account(PEERS[prov].public_key), s.providers)
                for account, n in (("pool:validators", s.validators), ("pool:stakers",
                                   s.stakers), ("treasury", s.treasury), ("burn", s.burn)):
                    move(account, n)
        want = {a: n for a, n in expected.items() if n != 0}
        got = {b.account: b.amount for b in led.balances() if b.amount != 0}
        assert got == want
        for account, n in expected.items():
            assert led.balance(account) == n
        assert sum(b.amount for b in led.balances()) == 0  # double entry
        report = led.verify()
        assert report.ok and report.verified == len(ops) == led.head().seq


def test_every_kind_of_entry_verifies_and_chains(ledger: Ledger) -> None:
    populate(ledger, ME)
    entries = ledger.entries()
    assert [e.seq for e in entries] == list(range(1, 8))
    assert entries[0].prev_hash == bytes(32)
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.entry_hash
    report = ledger.verify(expected_signer=ME.public_key)
    assert report.ok and report.verified == 7
    assert report.head_hash == ledger.head().entry_hash


# Every column of both tables, and how to tamper with it while keeping SQLite's constraints.
ENTRY_COLUMNS = ["seq", "kind", "body", "prev_hash", "entry_hash", "signer", "signature",
                 "idem_key", "subject"]


def _tampered(value: object, position: int) -> object:
    if isinstance(value, bytes):
        i = position % len(value)
        return value[:i] + bytes([value[i] ^ 0x01]) + value[i + 1:]
    if isinstance(value, str):
        i = position % len(value)
        return value[:i] + chr(ord(value[i]) ^ 0x01) + value[i + 1:]
    if value is None:
        return "x"
    assert isinstance(value, int)
    return value + 1 + position


@pytest.mark.parametrize("column", ENTRY_COLUMNS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=st.integers(1, 7), position=st.integers(0, 10_000))
def test_tampering_any_byte_of_any_entry_row_is_reported_at_that_entry(
    seq: int, column: str, position: int
) -> None:
    tmp, led = _tmp_ledger()
    with tmp, led:
        populate(led, ME)
        conn = raw_connect(led.path)
        (value,) = conn.execute(f"SELECT {column} FROM entries WHERE seq = ?", (seq,)).fetchone()
        if column == "seq":
            new: object = seq + 1000  # keys must stay unique
        else:
            new = _tampered(value, position)
        with conn:
            conn.execute(f"UPDATE entries SET {column} = ? WHERE seq = ?", (new, seq))
        conn.close()
        report = led.verify(expected_signer=ME.public_key)
        assert report.bad is not None, (column, value, new)
        assert report.bad.seq == seq, report.bad
        with pytest.raises(LedgerIntegrityError, match=f"^entry {seq}: "):
            led.verify_or_raise()


@SQL_SETTINGS
@given(seq=st.sampled_from([1, 3, 4]), column=st.sampled_from(["account", "amount"]),
       position=st.integers(0, 100))
def test_tampering_a_posting_is_reported_at_its_entry(seq: int, column: str,
                                                      position: int) -> None:
    tmp, led = _tmp_ledger()
    with tmp, led:
        populate(led, ME)
        conn = raw_connect(led.path)
        rowid, value = conn.execute(
            f"SELECT rowid, {column} FROM postings WHERE seq = ? ORDER BY account LIMIT 1",
            (seq,)).fetchone()
        with conn:
            conn.execute(f"UPDATE postings SET {column} = ? WHERE rowid = ?",
                         (_tampered(value, position), rowid))
        conn.close()
        report = led.verify()
        assert report.bad is not None and report.bad.seq == seq
        assert "postings" in report.bad.reason


def test_deleted_or_added_rows_are_reported(ledger: Ledger) -> None:
    populate(ledger, ME)
    conn = raw_connect(ledger.path)
    with conn:
        conn.execute("INSERT INTO postings VALUES (99, 'peer:thief', 1000000)")
    bad = ledger.verify().bad
    assert bad is not None and bad.seq == 99 and "does not exist" in bad.reason
    with conn:
        conn.execute("DELETE FROM postings WHERE seq = 99")
        conn.execute("DELETE FROM postings WHERE seq = 3")
        conn.execute("DELETE FROM entries WHERE seq = 3")
    bad = ledger.verify().bad
    assert bad is not None and bad.seq == 3 and "missing" in bad.reason


def test_ledger_rows_cannot_be_updated_or_deleted_through_sql(ledger: Ledger) -> None:
    populate(ledger, ME)
    conn = sqlite3.connect(str(ledger.path), isolation_level=None)
    for statement in ("UPDATE entries SET kind = 'faucet' WHERE seq = 3",
                      "DELETE FROM entries WHERE seq = 7",
                      "UPDATE postings SET amount = 0",
                      "DELETE FROM postings"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(statement)
    conn.close()
    assert ledger.verify().ok


def test_a_job_is_charged_at_most_once(ledger: Ledger) -> None:
    prov, cons = PEERS[1], PEERS[2]
    ledger.record_charge(charge_input(42, prov, cons, 5000), SEED)
    before = ledger.balances()
    assert ledger.has_charge((42).to_bytes(16, "big"))
    with pytest.raises(DuplicateEntryError, match="entry 1"):
        ledger.record_charge(charge_input(42, prov, cons, 5000), SEED)
    with pytest.raises(DuplicateEntryError):  # not even with another amount or preset
        ledger.record_charge(charge_input(42, prov, cons, 1, tokens=1), BME)
    assert ledger.balances() == before
    assert ledger.head().seq == 1
    ledger.record_receipt((42).to_bytes(16, "big"), prov.public_key, cons.public_key, 5000,
                          b"r")  # another kind has its own key space
    assert ledger.verify().ok


def test_a_faucet_grant_id_is_granted_once(ledger: Ledger) -> None:
    ledger.record_faucet(ME.public_key, 10, grant_id="peer-x/2026-05-09")
    with pytest.raises(DuplicateEntryError):
        ledger.record_faucet(ME.public_key, 10, grant_id="peer-x/2026-05-09")
    ledger.record_faucet(ME.public_key, 10)
    ledger.record_faucet(ME.public_key, 10)  # no grant id: no uniqueness
    assert ledger.balance(peer_account(ME.public_key)) == 30


def test_stake_view_is_newest_declaration_minus_slashes(ledger: Ledger) -> None:
    prov = PEERS[1]
    assert ledger.stake_of(prov.public_key).effective == 0
    ledger.record_stake(sign_stake(prov, 30_000, 2_000))
    ledger.record_stake(sign_stake(prov, 50_000, 1_000))  # older: recorded, not current
    assert ledger.stake_of(prov.public_key).declared == 30_000
    ledger.record_slash(prov.public_key, 25_000, reason="fraud", evidence=b"proof-1")
    status = ledger.stake_of(prov.public_key)
    assert (status.declared, status.slashed, status.effective) == (30_000, 25_000, 5_000)
    with pytest.raises(DuplicateEntryError):  # one proof slashes once
        ledger.record_slash(prov.public_key, 25_000, reason="fraud", evidence=b"proof-1")
    assert ledger.stake_of(PEERS[2].public_key).effective == 0


def test_malformed_entries_are_refused_before_they_are_written(ledger: Ledger) -> None:
    with pytest.raises(ValidationError):
        ledger.record_faucet(ME.public_key, -1)
    with pytest.raises(ValidationError):
        ledger.record_charge(charge_input(1, PEERS[1], PEERS[2], 10, tokens=-5), SEED)
    assert ledger.head().seq == 0 and ledger.verify().ok


def test_a_forged_stake_declaration_is_not_recorded(ledger: Ledger) -> None:
    decl = sign_stake(PEERS[1], 10, 1)
    forged = type(decl)(decl.provider, 10**12, decl.issued_at, decl.signature)
    with pytest.raises(SignatureError):
        ledger.record_stake(forged)
    assert ledger.head().seq == 0


def test_evidence_verifier_reports_the_entry_whose_evidence_fails(ledger: Ledger) -> None:
    populate(ledger, ME)

    def reject_bme_charges(entry: Entry) -> None:
        if isinstance(entry.body, ChargeBody) and entry.body.preset == "bme":
            raise ValueError("receipt signature does not verify")

    bad = ledger.verify(evidence_verifier=reject_bme_charges).bad
    assert bad is not None and bad.seq == 4 and "receipt signature" in bad.reason


def test_insufficient_credit_is_refused_with_the_balance(ledger: Ledger) -> None:
    ledger.record_faucet(ME.public_key, 100)
    ledger.require_credit(peer_account(ME.public_key), 100)
    with pytest.raises(InsufficientCreditError, match="holds 100"):
        ledger.require_credit(peer_account(ME.public_key), 101)


def test_the_ledger_belongs_to_one_node_key(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger.open(path, ME).close()
    with pytest.raises(LedgerError, match="another node key"):
        Ledger.open(path, NodeIdentity.generate())
    with Ledger.open(path) as read_only, pytest.raises(LedgerError, match="read-only"):
        read_only.record_faucet(ME.public_key, 1)
    with pytest.raises(LedgerError, match="no ledger"):
        Ledger.open(tmp_path / "missing.sqlite3")


def test_a_ledger_signed_by_another_key_fails_verification(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.sqlite3", ME) as led:
        led.record_faucet(ME.public_key, 1)
        bad = led.verify(expected_signer=PEERS[1].public_key).bad
        assert bad is not None and bad.seq == 0 and "owner" in bad.reason


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger.open(path, ME).close()
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    with pytest.raises(LedgerError, match="schema version 3"):
        Ledger.open(path, ME)


def test_sqlite_is_in_wal_mode_with_full_sync(ledger: Ledger) -> None:
    conn = sqlite3.connect(str(ledger.path))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def _summed(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(str(path))
    rows = conn.execute("SELECT account, SUM(amount) FROM postings GROUP BY account").fetchall()
    conn.close()
    return dict(rows)


def test_a_balance_is_read_from_its_running_total_not_summed_per_check(ledger: Ledger) -> None:
    populate(ledger, ME)
    conn = raw_connect(ledger.path)
    # The credit check's query reads one row of the running totals, by primary key.
    plan = " ".join(str(row) for row in conn.execute(
        "EXPLAIN QUERY PLAN SELECT balance FROM account_balances WHERE account = ?", ("x",)))
    conn.close()
    assert "account_balances USING PRIMARY KEY" in plan, plan
    assert {b.account: b.amount for b in ledger.balances()} == _summed(ledger.path)
    assert ledger.balance("peer:nobody") == 0


@pytest.mark.parametrize("tamper", [
    "UPDATE account_balances SET balance = balance + 1 WHERE account = 'treasury'",
    "DELETE FROM account_balances WHERE account = 'treasury'",
    "INSERT INTO account_balances VALUES ('peer:thief', 1000000)",
])
def test_a_running_balance_changed_behind_the_ledgers_back_is_reported(
    ledger: Ledger, tamper: str
) -> None:
    populate(ledger, ME)
    before = ledger.balance(peer_account(ME.public_key))
    conn = raw_connect(ledger.path)
    with conn:
        conn.execute(tamper)
    conn.close()
    bad = ledger.verify().bad
    assert bad is not None and bad.seq == 0 and "running balance of" in bad.reason, bad
    assert ("peer:thief" if "thief" in tamper else "treasury") in bad.reason
    assert ledger.balance(peer_account(ME.public_key)) == before  # other accounts untouched


def test_a_balance_that_would_overflow_aborts_the_whole_write(ledger: Ledger) -> None:
    from p2pinfer.protocol.canonical import MAX_INT

    ledger.record_faucet(ME.public_key, MAX_INT)
    with pytest.raises(LedgerError, match="cannot write"):
        ledger.record_faucet(ME.public_key, 1)  # MAX_INT + 1 does not fit: not a float
    assert ledger.head().seq == 1
    assert ledger.balance(peer_account(ME.public_key)) == MAX_INT
    assert ledger.verify().ok


def test_a_version_1_ledger_gets_its_running_balances_when_opened(tmp_path: Path) -> None:
    # Written by the code before running balances existed (tests/unit/golden).
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes((Path(__file__).parent / "golden" / "ledger-v1.sqlite").read_bytes())
    conn = sqlite3.connect(str(path))
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
    summed = _summed(path)
    with Ledger.open(path) as led:
        assert {b.account: b.amount for b in led.balances()} == summed
        assert all(led.balance(account) == n for account, n in summed.items())
        assert led.verify().ok
    conn = sqlite3.connect(str(path))
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()


def test_recent_payers_are_the_keys_of_the_last_charges_of_this_provider(
    ledger: Ledger,
) -> None:
    """What a restarted provider takes back as its payers (`ConsumerGate.remember_payers`):
    the consumers of its own last charges, oldest first; others' charges are not its."""
    me, other, a, b = ME, PEERS[1], PEERS[2], fixed_identity(9)
    for job, (provider, consumer) in enumerate([(me, a), (other, b), (me, b), (me, a)]):
        ledger.record_charge(charge_input(job, provider, consumer, 1000), SEED)
    at = 1_700_000_000_000
    assert ledger.recent_payers(me.public_key, 10) == [
        (a.public_key, at), (b.public_key, at), (a.public_key, at)]
    assert ledger.recent_payers(me.public_key, 2) == [(b.public_key, at), (a.public_key, at)]
    assert ledger.recent_payers(other.public_key, 10) == [(b.public_key, at)]
