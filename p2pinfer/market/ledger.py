"""A node's ledger: an append-only, hash-chained, signed log of entries in SQLite (WAL).

Every write is one `BEGIN IMMEDIATE` transaction that reads the chain head,
appends one entry and its postings, and commits; SQLite's write lock makes
concurrent writers (threads or processes) queue, and WAL with synchronous=FULL
makes a committed entry durable and an interrupted one vanish whole.
Entries and postings are never updated or deleted (triggers refuse it). Each
account's balance is kept running in `account_balances`, by a trigger on every
posting in the same transaction (a credit check reads one row, not every posting
the account ever had); `verify` recomputes every derived column, hash, signature
and running balance and names the first thing that does not check out.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pinfer.errors import (
    DuplicateEntryError,
    LedgerError,
    LedgerIntegrityError,
    ValidationError,
)
from p2pinfer.identity import NodeIdentity
from p2pinfer.market import entries as E
from p2pinfer.market.channel_entries import RedemptionBody, VoucherBody
from p2pinfer.market.entries import Entry, EntryBody, Posting
from p2pinfer.market.ledger_reads import Balance, ChainHead, LedgerReads
from p2pinfer.market.split import SplitPreset, split
from p2pinfer.market.stake import StakeDeclaration, verify_stake
from p2pinfer.market.verify_chain import BadEntry, EvidenceVerifier, VerifyReport, walk_chain

SCHEMA_VERSION = 2
LEDGER_FILE_NAME = "ledger.sqlite3"

_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    """CREATE TABLE entries (
        seq        INTEGER PRIMARY KEY,
        kind       TEXT NOT NULL,
        body       BLOB NOT NULL CHECK (typeof(body) = 'blob'),
        prev_hash  BLOB NOT NULL CHECK (length(prev_hash) = 32),
        entry_hash BLOB NOT NULL UNIQUE CHECK (length(entry_hash) = 32),
        signer     BLOB NOT NULL CHECK (length(signer) = 32),
        signature  BLOB NOT NULL CHECK (length(signature) = 64),
        idem_key   TEXT,
        subject    TEXT,
        UNIQUE (kind, idem_key)
    )""",
    "CREATE INDEX entries_subject ON entries (subject, kind)",
    """CREATE TABLE postings (
        seq     INTEGER NOT NULL REFERENCES entries (seq),
        account TEXT NOT NULL,
        amount  INTEGER NOT NULL CHECK (typeof(amount) = 'integer'),
        PRIMARY KEY (seq, account)
    )""",
    "CREATE INDEX postings_account ON postings (account)",
    """CREATE VIEW balances AS
        SELECT account, SUM(amount) AS balance FROM postings GROUP BY account""",
    *(
        f"""CREATE TRIGGER {table}_no_{op} BEFORE {op.upper()} ON {table}
            BEGIN SELECT RAISE(ABORT, 'ledger {table} are append-only'); END"""
        for table in ("entries", "postings")
        for op in ("update", "delete")
    ),
)

#: Version 1 -> 2: each account's balance kept running (it was a SUM over every posting
#: of the account on each read: 34 ms per credit check at 100,000 jobs on a 2-core VM,
#: bench/ledger_bench.py).
#: An integer overflow aborts the write (typeof check) instead of turning into a float.
_RUNNING_BALANCES: tuple[str, ...] = (
    """CREATE TABLE account_balances (
        account TEXT PRIMARY KEY,
        balance INTEGER NOT NULL CHECK (typeof(balance) = 'integer')
    ) WITHOUT ROWID""",
    "INSERT INTO account_balances SELECT account, SUM(amount) FROM postings GROUP BY account",
    """CREATE TRIGGER postings_running_balance AFTER INSERT ON postings BEGIN
        INSERT INTO account_balances (account, balance) VALUES (NEW.account, NEW.amount)
        ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance;
    END""",
    "DROP VIEW balances",
    "CREATE VIEW balances AS SELECT account, balance FROM account_balances",
)


def _add_running_balances(conn: sqlite3.Connection) -> None:  # version 1 -> 2
    for statement in _RUNNING_BALANCES:
        conn.execute(statement)


def ledger_path(home: Path) -> Path:
    """Where a node keeps its ledger: <home>/ledger.sqlite3."""
    return home / LEDGER_FILE_NAME


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class ChargeInput:
    """What the node knows of a completed, receipted job when it records the charge.

    `result` is the provider's signed JobResult and `receipt` the consumer's
    signed Receipt, both as the exact bytes received; the ledger stores them
    opaquely so `verify(evidence_verifier=...)` can re-check them later.
    """

    job_id: bytes
    model: str
    provider: bytes
    consumer: bytes
    tokens: int
    amount: int
    result: bytes
    receipt: bytes


def _write_postings(conn: sqlite3.Connection, seq: int, postings: tuple[Posting, ...]) -> None:
    # A module function (not inlined) so the crash test can kill the process right here,
    # after the entry row and before its postings and the commit.
    conn.executemany(
        "INSERT INTO postings (seq, account, amount) VALUES (?, ?, ?)",
        [(seq, p.account, p.amount) for p in postings],
    )


class Ledger(LedgerReads):
    """One node's ledger file. Thread-safe; several processes may share the file."""

    what = "ledger"
    error = LedgerError

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        identity: NodeIdentity | None,
        owner: bytes | None,
        clock: Callable[[], int],
    ) -> None:
        super().__init__(conn, path)
        self._identity = identity
        self.owner = owner
        self._clock = clock

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        identity: NodeIdentity | None = None,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        busy_timeout_ms: int = 10_000,
    ) -> Ledger:
        """Open (with `identity`: create if missing) the ledger at `path`.

        Without an identity the ledger is read-only and must exist. With one,
        the ledger must belong to that identity (LedgerError otherwise).
        """
        if not path.exists():
            if identity is None:
                raise LedgerError(f"no ledger at {path}; it is created when the node first runs")
            path.parent.mkdir(parents=True, exist_ok=True)

        def create(conn: sqlite3.Connection) -> None:  # version 0 -> 1: a new ledger
            if identity is None:
                raise LedgerError(f"{path} is not a p2pinfer ledger")
            # Statement by statement: executescript() would commit the open transaction.
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("INSERT INTO meta VALUES ('owner', ?)", (identity.public_key,))

        conn, _ = cls.connect(path, [create, _add_running_balances],
                              busy_timeout_s=busy_timeout_ms / 1000)
        ledger = cls(conn, path, identity, None, clock)
        row = ledger.read("SELECT value FROM meta WHERE key = 'owner'")
        ledger.owner = bytes(row[0][0]) if row and isinstance(row[0][0], bytes) else None
        if identity is not None and ledger.owner != identity.public_key:
            ledger.close()
            raise LedgerError(f"ledger {path} belongs to another node key; refusing to write to it")
        return ledger

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def _append(self, body: EntryBody) -> Entry:
        if self._identity is None:
            raise LedgerError(f"ledger {self.path} was opened read-only (no node key)")
        identity = self._identity
        with self.write() as conn:
            head = self._head(conn)
            seq, at_ms = head.seq + 1, self._clock()
            data = E.encode_body(seq, at_ms, body)
            # Refuse here (ValidationError) what verify would later reject.
            E.decode_body(data)
            entry_hash = E.chain_hash(head.entry_hash, data)
            signature = E.sign_entry(identity, entry_hash)
            key = body.idem_key()
            try:
                conn.execute(
                    "INSERT INTO entries (seq, kind, body, prev_hash, entry_hash, signer,"
                    " signature, idem_key, subject) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (seq, body.kind, data, head.entry_hash, entry_hash, identity.public_key,
                     signature, key, body.subject()),
                )
            except sqlite3.IntegrityError as exc:
                raise self._duplicate(conn, body.kind, key) from exc
            _write_postings(conn, seq, body.postings())
        return Entry(seq, at_ms, body, head.entry_hash, entry_hash, identity.public_key, signature)

    @staticmethod
    def _duplicate(conn: sqlite3.Connection, kind: str, key: str | None) -> LedgerError:
        row = conn.execute(
            "SELECT seq FROM entries WHERE kind = ? AND idem_key = ?", (kind, key)
        ).fetchone()
        if row is None:
            return LedgerError(f"ledger refused a {kind} entry (constraint violated)")
        return DuplicateEntryError(f"{kind} {key} is already in the ledger (entry {row[0]})")

    def record_faucet(self, recipient: bytes, amount: int, *, grant_id: str = "") -> Entry:
        """Mint `amount` testnet micro-credits to `recipient` (a public key).

        A non-empty `grant_id` is unique: DuplicateEntryError if it was granted before.
        """
        return self._append(E.FaucetGrant(recipient, amount, grant_id))

    def record_charge(
        self, charge: ChargeInput, preset: SplitPreset, *, quality_pm: int = 1000
    ) -> Entry:
        """Record a paid job: the consumer pays `charge.amount`, split by `preset`, with the
        provider paid `quality_pm`/1000 of its share (pricing.quality_multiplier_pm).

        A job is charged at most once: DuplicateEntryError if `job_id` was charged before.
        """
        parts = split(charge.amount, preset, quality_pm)
        return self._append(E.ChargeBody(
            charge.job_id, charge.model, charge.provider, charge.consumer, charge.tokens,
            charge.amount, preset.name, quality_pm, E.ChargeParts.of(parts), charge.result,
            charge.receipt,
        ))

    def record_receipt(
        self, job_id: bytes, provider: bytes, consumer: bytes, amount: int, receipt: bytes
    ) -> Entry:
        """Keep a receipt as evidence without moving money (at most once per job id)."""
        return self._append(E.ReceiptBody(job_id, provider, consumer, amount, receipt))

    def record_stake(self, declaration: StakeDeclaration) -> Entry:
        """Record a provider's stake declaration after checking its signature
        (SignatureError/ValidationError if it does not verify; DuplicateEntryError if recorded)."""
        verify_stake(declaration)
        return self._append(E.StakeBody(declaration))

    def record_slash(
        self, provider: bytes, amount: int, *, reason: str, evidence: bytes, slash_id: str = ""
    ) -> Entry:
        """Slash `amount` of `provider`'s stake in this ledger for proven fraud.

        `evidence` names the proof (its hash), at most MAX_SLASH_EVIDENCE bytes: the proof
        itself (a CheckReport can be 0.5 MB) would grow the ledger by its size per
        entry. One proof slashes once: `slash_id` defaults to sha256(evidence).
        ValidationError if `evidence` is longer.
        """
        if len(evidence) > E.MAX_SLASH_EVIDENCE:
            raise ValidationError(
                f"slash evidence is {len(evidence)} bytes; store its hash "
                f"(at most {E.MAX_SLASH_EVIDENCE} bytes), not the proof")
        sid = slash_id or hashlib.sha256(evidence).hexdigest()
        return self._append(E.SlashBody(provider, amount, reason, evidence, sid))

    def record_settlement(self, body: VoucherBody | RedemptionBody) -> Entry:
        """Journal a channel voucher (signed or held) or a redemption; no credits move here
        (the chain holds them). DuplicateEntryError for the same voucher or tx twice."""
        return self._append(body)

    def settlement_entries(self, subject: str) -> list[Entry]:
        """The voucher or redemption entries of `subject` (channel_entries), oldest first."""
        rows = self.read(
            "SELECT seq, body, prev_hash, entry_hash, signer, signature FROM entries"
            " WHERE subject = ? AND kind IN ('voucher', 'redemption') ORDER BY seq",
            (subject,))
        return self._decode_rows(rows)

    # -- verification ----------------------------------------------------------------------

    def read_snapshot(self) -> AbstractContextManager[sqlite3.Connection]:
        """One read transaction, for checks that span several queries (LedgerError if the
        file cannot be read)."""
        return self.snapshot()

    def verify(
        self,
        *,
        expected_signer: bytes | None = None,
        evidence_verifier: EvidenceVerifier | None = None,
    ) -> VerifyReport:
        """Walk the whole chain (one read snapshot) and report the first bad entry, if any.

        `expected_signer` defaults to the owner recorded at creation; the node
        passes its own public key. `evidence_verifier` re-checks stored signed
        messages (JobResult, Receipt, CheckReport) that only the protocol knows.
        (A start from a checkpoint walks only the later entries: market/checkpoint.py.)
        """
        with self.read_snapshot() as conn:
            return walk_chain(conn, self.owner, expected_signer, evidence_verifier)

    def verify_or_raise(self, **kwargs: Any) -> VerifyReport:
        """`verify`, raising LedgerIntegrityError("entry N: why") on the first bad entry."""
        report = self.verify(**kwargs)
        if report.bad is not None:
            raise LedgerIntegrityError(f"entry {report.bad.seq}: {report.bad.reason}")
        return report


__all__ = [
    "LEDGER_FILE_NAME", "BadEntry", "Balance", "ChainHead", "ChargeInput", "EvidenceVerifier",
    "Ledger", "VerifyReport", "ledger_path",
]
