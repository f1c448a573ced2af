"""Start-up verification of a node's ledger from a signed checkpoint, so it stays fast.

`ledger --verify` walks every entry (hash, signature, decoding, postings): on a
100k-entry ledger that takes many seconds. A node must not run on a ledger that
fails it (it would trust forged credit), yet must start quickly. So after each
successful check the node writes `<home>/ledger.checkpoint.json`, signed with
its key: the last verified entry's seq and hash, a digest of every account's
balance as of that entry, and a digest of the stake and slash entries up to it.

At the next start, `verify_from_checkpoint`:
1. checks the checkpoint's signature (this node's key), that the entry at its seq
   still has its hash and that exactly that many entries lie at or before it;
2. recomputes the two digests in SQL, so a posting inserted, changed or removed at or
   before the checkpoint, or a changed stake or slash, is found without re-walking
   those entries;
3. walks every entry after the checkpoint in full, as `ledger --verify` does.
All in one read snapshot and one pass over the postings (`AccountSums`): the sums up
to the checkpoint, the totals the running balances must equal, the new checkpoint's.
Any failure raises LedgerIntegrityError (exit 11): the node does not start.
Without a checkpoint (first start, or the file deleted on purpose) the walk is full.
What the shortcut does not re-check before the checkpoint (e.g. the text of an old
charge's evidence) `ledger --verify` still does.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pinfer.errors import LedgerIntegrityError, SignatureError
from p2pinfer.identity import NodeIdentity
from p2pinfer.market import entries as E
from p2pinfer.market.ledger import Ledger
from p2pinfer.market.verify_chain import VerifyReport, walk_chain
from p2pinfer.protocol.records import sign_bytes, verify_bytes

CHECKPOINT_FILE_NAME = "ledger.checkpoint.json"
CHECKPOINT_DOMAIN = b"p2pinfer/v1/ledger-checkpoint"
CHECKPOINT_VERSION = 1


def checkpoint_path(home: Path) -> Path:
    """Where a node keeps its ledger checkpoint: <home>/ledger.checkpoint.json."""
    return home / CHECKPOINT_FILE_NAME


@dataclass(frozen=True)
class Checkpoint:
    """A verified prefix of the ledger: entries 1..seq, the last with `entry_hash`."""

    seq: int
    entry_hash: bytes
    balances: bytes  # sha256 over every account's balance as of `seq`
    stakes: bytes  # sha256 over the stake and slash entries up to `seq`
    signer: bytes = b""
    signature: bytes = b""

    def content(self) -> bytes:
        """What is signed after CHECKPOINT_DOMAIN: sorted JSON of the fields but the signer's
        (a local file, never sent: JSON, not a canonical record)."""
        fields = {"v": CHECKPOINT_VERSION, "seq": self.seq, "entry_hash": self.entry_hash.hex(),
                  "balances": self.balances.hex(), "stakes": self.stakes.hex()}
        return json.dumps(fields, sort_keys=True).encode()

    def signing_bytes(self) -> bytes:
        return CHECKPOINT_DOMAIN + self.content()


@dataclass(frozen=True)
class StartupCheck:
    """What start-up verification did: from which checkpoint, how many entries it walked."""

    checkpoint_seq: int  # 0: no checkpoint, the whole chain was walked
    verified: int  # entries walked in full (those after the checkpoint)
    head_seq: int
    seconds: float


#: One pass over the postings: per account, its sum and count of postings at or before
#: the checkpoint's entry, and its sum of all postings.
ACCOUNT_SUMS = """
    SELECT account, SUM(CASE WHEN seq <= :seq THEN amount ELSE 0 END), SUM(seq <= :seq),
           SUM(amount)
    FROM postings GROUP BY account ORDER BY account"""


@dataclass(frozen=True)
class AccountSums:
    """Every account's sum of postings as of a checkpoint (`prefix`: only accounts with a
    posting by then) and in all (`totals`), from one pass over the postings; both in the
    accounts' order in SQL, which the digests follow."""

    prefix: list[tuple[str, int]]
    totals: dict[str, int]

    @classmethod
    def read(cls, conn: sqlite3.Connection, seq: int) -> AccountSums:
        prefix, totals = [], {}
        for account, before, count, total in conn.execute(ACCOUNT_SUMS, {"seq": seq}):
            if count:
                prefix.append((account, before))
            totals[account] = total
        return cls(prefix, totals)


def _balances_digest(balances: Iterable[tuple[str, int]]) -> bytes:
    digest = hashlib.sha256()
    for account, amount in balances:
        digest.update(f"{account}\x00{amount}\n".encode(errors="surrogateescape"))
    return digest.digest()


def _stakes_digest(conn: sqlite3.Connection, seq: int) -> bytes:
    stakes = hashlib.sha256()
    for row_seq, body in conn.execute(
        "SELECT seq, body FROM entries WHERE seq <= ? AND kind IN ('stake', 'slash')"
        " ORDER BY seq", (seq,)):
        data = body if isinstance(body, bytes) else repr(body).encode()
        stakes.update(f"{row_seq}:{len(data)}:".encode() + data)
    return stakes.digest()


def _signed(identity: NodeIdentity, report: VerifyReport, balances: bytes, stakes: bytes
            ) -> Checkpoint:
    """A checkpoint at the head of a walk that found nothing wrong, signed."""
    unsigned = Checkpoint(report.head_seq, report.head_hash, balances, stakes)
    return Checkpoint(unsigned.seq, unsigned.entry_hash, balances, stakes, identity.public_key,
                      sign_bytes(identity, CHECKPOINT_DOMAIN, unsigned.content()))


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write the checkpoint file atomically (a reader sees the old one or the new one)."""
    body = {"v": CHECKPOINT_VERSION, "seq": checkpoint.seq,
            "entry_hash": checkpoint.entry_hash.hex(), "balances": checkpoint.balances.hex(),
            "stakes": checkpoint.stakes.hex(), "signer": checkpoint.signer.hex(),
            "signature": checkpoint.signature.hex()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=1))
    os.replace(tmp, path)


def read_checkpoint(path: Path, owner: bytes) -> Checkpoint | None:
    """The checkpoint in `path` if there is one (None if absent); LedgerIntegrityError if it
    is unreadable or not signed by `owner` (this node's key)."""
    try:
        raw: Any = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LedgerIntegrityError(f"ledger checkpoint {path} is unreadable: {exc}") from exc
    try:
        if raw["v"] != CHECKPOINT_VERSION or not isinstance(raw["seq"], int) or raw["seq"] < 1:
            raise ValueError("unknown version or bad seq")
        checkpoint = Checkpoint(
            raw["seq"], bytes.fromhex(raw["entry_hash"]), bytes.fromhex(raw["balances"]),
            bytes.fromhex(raw["stakes"]), bytes.fromhex(raw["signer"]),
            bytes.fromhex(raw["signature"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise LedgerIntegrityError(f"ledger checkpoint {path} is malformed: {exc}") from exc
    try:
        if checkpoint.signer != owner:
            raise SignatureError("signed by another key")
        verify_bytes(owner, CHECKPOINT_DOMAIN, checkpoint.content(), checkpoint.signature)
    except SignatureError as exc:
        raise LedgerIntegrityError(
            f"ledger checkpoint {path} is not signed by this node's key ({exc})") from exc
    return checkpoint


def _check_prefix(conn: sqlite3.Connection, checkpoint: Checkpoint, sums: AccountSums
                  ) -> str | None:
    """Why the ledger no longer matches `checkpoint`, or None if it does."""
    seq = checkpoint.seq
    row = conn.execute("SELECT entry_hash FROM entries WHERE seq = ?", (seq,)).fetchone()
    if row is None:
        return f"entry {seq} is missing: the ledger was truncated or replaced"
    if row[0] != checkpoint.entry_hash:
        return f"entry {seq} no longer has the hash the checkpoint recorded"
    (count,) = conn.execute("SELECT COUNT(*) FROM entries WHERE seq <= ?", (seq,)).fetchone()
    if count != seq:
        return f"{count} entries at or before entry {seq}, not {seq}"
    if _balances_digest(sums.prefix) != checkpoint.balances:
        return f"the balances as of entry {seq} changed (a posting was added, altered or removed)"
    if _stakes_digest(conn, seq) != checkpoint.stakes:
        return f"a stake or slash entry at or before entry {seq} changed"
    return None


def verify_from_checkpoint(
    ledger: Ledger,
    identity: NodeIdentity,
    path: Path,
    *,
    timer: Callable[[], float] = time.perf_counter,
) -> StartupCheck:
    """Verify the ledger from its checkpoint in `path` (or in full without one), then move
    the checkpoint to the head. LedgerIntegrityError naming the first problem otherwise.

    All in one read snapshot, with one pass over the postings (`AccountSums`): it gives
    the checkpoint's balances, the totals the running balances are checked against, and
    the new checkpoint's balances."""
    started = timer()
    checkpoint = read_checkpoint(path, identity.public_key)
    seq = checkpoint.seq if checkpoint is not None else 0
    with ledger.read_snapshot() as conn:
        sums = AccountSums.read(conn, seq)
        problem = _check_prefix(conn, checkpoint, sums) if checkpoint is not None else None
        if problem is not None:
            raise LedgerIntegrityError(
                f"ledger {ledger.path} does not match its checkpoint: {problem}")
        report = walk_chain(conn, ledger.owner, identity.public_key, None, after_seq=seq,
                            after_hash=checkpoint.entry_hash if checkpoint else E.GENESIS_PREV,
                            totals=sums.totals)
        if report.bad is not None:
            raise LedgerIntegrityError(f"ledger {ledger.path} fails verification: "
                                       f"entry {report.bad.seq}: {report.bad.reason}")
        if report.head_seq > seq:  # the walk proved every posting: the totals are the head's
            write_checkpoint(path, _signed(identity, report, _balances_digest(
                sums.totals.items()), _stakes_digest(conn, report.head_seq)))
    return StartupCheck(seq, report.verified, report.head_seq, timer() - started)
