"""The ledger's integrity walk: every row re-derived from its body, hash and signature.

Checks, in this order, for each row by seq (the first failure is reported):
contiguous seq from 1; column types; prev_hash equals the previous entry's
hash (32 zero bytes for entry 1); entry_hash = sha256(prev_hash || body);
signer is the expected key and the Ed25519 signature over
`p2pinfer/v1/ledger || entry_hash` verifies; the body is canonical and its
seq and kind match the row; idem_key, subject and postings equal what the body
implies; a stake declaration's own signature verifies; and, if given, the
protocol's evidence verifier accepts the stored signed messages. Finally no
posting may point at a missing entry, and every account's running balance
(`account_balances`) must equal the sum of its postings (reported as seq 0).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from p2pinfer.errors import P2PInferError, SignatureError
from p2pinfer.market import entries as E
from p2pinfer.market.entries import Entry
from p2pinfer.market.stake import verify_stake

#: Re-checks an entry's stored counterparty messages; raises P2PInferError/ValueError if bad.
EvidenceVerifier = Callable[[Entry], None]


@dataclass(frozen=True)
class BadEntry:
    """The first entry that failed verification (seq 0: the ledger header) and why."""

    seq: int
    reason: str


@dataclass(frozen=True)
class VerifyReport:
    """Result of a walk: how many entries verified, the head, and the first bad entry."""

    verified: int
    head_seq: int
    head_hash: bytes
    bad: BadEntry | None

    @property
    def ok(self) -> bool:
        return self.bad is None


_COLUMNS = "seq, kind, body, prev_hash, entry_hash, signer, signature, idem_key, subject"
_TYPES: tuple[tuple[str, Any], ...] = (
    ("kind", str), ("body", bytes), ("prev_hash", bytes), ("entry_hash", bytes),
    ("signer", bytes), ("signature", bytes), ("idem_key", str | None), ("subject", str | None),
)


class _Bad(Exception):
    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(reason)
        self.bad = BadEntry(seq, reason)


def _check_row(
    conn: sqlite3.Connection,
    row: tuple[Any, ...],
    prev_hash: bytes,
    signer_expected: bytes | None,
    evidence_verifier: EvidenceVerifier | None,
) -> Entry:
    seq = row[0]
    cols = dict(zip(("kind", "body", "prev_hash", "entry_hash", "signer", "signature",
                     "idem_key", "subject"), row[1:], strict=True))
    for name, kind in _TYPES:
        if not isinstance(cols[name], kind):
            raise _Bad(seq, f"column {name} has the wrong type")
    if cols["prev_hash"] != prev_hash:
        raise _Bad(seq, "prev_hash is not the previous entry's hash")
    if E.chain_hash(prev_hash, cols["body"]) != cols["entry_hash"]:
        raise _Bad(seq, "entry_hash is not sha256(prev_hash || body)")
    if signer_expected is not None and cols["signer"] != signer_expected:
        raise _Bad(seq, "signed by a key that does not own this ledger")
    try:
        E.verify_entry(cols["signer"], cols["entry_hash"], cols["signature"])
    except SignatureError:
        raise _Bad(seq, "signature does not verify") from None
    try:
        body_seq, at_ms, body = E.decode_body(cols["body"])
    except P2PInferError as exc:
        raise _Bad(seq, f"body does not decode: {exc}") from None
    if body_seq != seq:
        raise _Bad(seq, f"body says seq {body_seq}")
    if body.kind != cols["kind"]:
        raise _Bad(seq, f"kind column {cols['kind']!r} is not the body's {body.kind!r}")
    if cols["idem_key"] != body.idem_key() or cols["subject"] != body.subject():
        raise _Bad(seq, "idem_key or subject column does not match the body")
    postings = conn.execute(
        "SELECT account, amount FROM postings WHERE seq = ? ORDER BY account", (seq,)
    ).fetchall()
    if [E.Posting(a, n) for a, n in postings] != list(body.postings()):
        raise _Bad(seq, "postings do not match the body")
    entry = Entry(seq, at_ms, body, prev_hash, cols["entry_hash"], cols["signer"],
                  cols["signature"])
    if isinstance(body, E.StakeBody):
        try:
            verify_stake(body.declaration)
        except P2PInferError:
            raise _Bad(seq, "stake declaration is not signed by its provider") from None
    elif evidence_verifier is not None:
        try:
            evidence_verifier(entry)
        except (P2PInferError, ValueError) as exc:
            raise _Bad(seq, f"evidence does not verify: {exc}") from None
    return entry


def walk_chain(
    conn: sqlite3.Connection,
    owner: bytes | None,
    expected_signer: bytes | None,
    evidence_verifier: EvidenceVerifier | None,
    *,
    after_seq: int = 0,
    after_hash: bytes = E.GENESIS_PREV,
    totals: Mapping[str, int] | None = None,
) -> VerifyReport:
    """Verify every entry in `conn` (inside the caller's read transaction), or with
    `after_seq` only the entries after it, trusting that entry's hash is `after_hash`
    (a checkpoint: see market/checkpoint.py). `verified` counts the entries walked.
    `totals`: every account's sum of postings, when the caller has read them in this
    transaction already (the running balances are checked against them, not re-summed)."""
    signer = expected_signer or owner
    prev_hash, expected_seq = after_hash, after_seq + 1

    def report(bad: BadEntry | None) -> VerifyReport:
        return VerifyReport(expected_seq - 1 - after_seq, expected_seq - 1, prev_hash, bad)

    if expected_signer is not None and owner is not None and owner != expected_signer:
        return report(BadEntry(0, "the ledger's recorded owner is not this node's key"))
    # A full walk reads every row, so that a row at seq <= 0 is reported too.
    rows = conn.execute(f"SELECT {_COLUMNS} FROM entries WHERE seq > ? ORDER BY seq",
                        (after_seq,)) if after_seq else conn.execute(
        f"SELECT {_COLUMNS} FROM entries ORDER BY seq")
    for row in rows:
        seq = row[0]
        if not isinstance(seq, int) or seq != expected_seq:
            if isinstance(seq, int) and seq > expected_seq:
                return report(BadEntry(expected_seq, f"missing (the next entry is {seq})"))
            return report(BadEntry(seq if isinstance(seq, int) else 0, "out of sequence"))
        try:
            entry = _check_row(conn, row, prev_hash, signer, evidence_verifier)
        except _Bad as bad:
            return report(bad.bad)
        signer = signer or entry.signer
        prev_hash, expected_seq = entry.entry_hash, expected_seq + 1
    orphan = conn.execute(
        "SELECT MIN(seq) FROM postings WHERE seq NOT IN (SELECT seq FROM entries)"
    ).fetchone()[0]
    if orphan is not None:
        return report(BadEntry(int(orphan), "postings for an entry that does not exist"))
    return report(_running_balance_mismatch(conn) if totals is None else
                  _kept_balance_mismatch(conn, totals))


#: Accounts whose running balance is not the sum of their postings (either side missing).
MISMATCHED_BALANCES = """
    SELECT account, total, balance FROM (
        SELECT p.account AS account, p.total AS total, b.balance AS balance
        FROM (SELECT account, SUM(amount) AS total FROM postings GROUP BY account) AS p
        LEFT JOIN account_balances AS b ON b.account = p.account
        UNION ALL
        SELECT b.account, NULL, b.balance FROM account_balances AS b
        WHERE NOT EXISTS (SELECT 1 FROM postings AS q WHERE q.account = b.account)
    ) WHERE balance IS NOT total ORDER BY account LIMIT 1"""


def _running_balance_mismatch(conn: sqlite3.Connection) -> BadEntry | None:
    """The first account whose kept balance differs from the sum of its postings, if any
    (one pass over the postings)."""
    row = conn.execute(MISMATCHED_BALANCES).fetchone()
    return None if row is None else _mismatch(*row)


def _kept_balance_mismatch(conn: sqlite3.Connection, totals: Mapping[str, int]
                           ) -> BadEntry | None:
    """As `_running_balance_mismatch`, against sums of postings the caller has read."""
    kept = dict(conn.execute("SELECT account, balance FROM account_balances"))
    for account in sorted(kept.keys() | totals.keys()):
        if kept.get(account) != totals.get(account):
            return _mismatch(account, totals.get(account), kept.get(account))
    return None


def _mismatch(account: str, total: int | None, balance: int | None) -> BadEntry:
    return BadEntry(0, f"the running balance of {account} is {balance}, but its postings "
                       f"sum to {total if total is not None else 0}")
