"""Reading a node's ledger: the chain head, balances, entries and stakes.

`LedgerReads` is the read side of `Ledger` (`market/ledger.py`, which appends);
every read is one SQLite read transaction over the append-only tables.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from p2pinfer.errors import InsufficientCreditError, LedgerError, LedgerIntegrityError
from p2pinfer.market import entries as E
from p2pinfer.market.entries import Entry
from p2pinfer.market.stake import NO_STAKE, StakeDeclaration, StakeStatus
from p2pinfer.store import SqliteStore


@dataclass(frozen=True)
class Balance:
    account: str
    amount: int


@dataclass(frozen=True)
class ChainHead:
    """The newest entry's seq and hash (seq 0 and the genesis hash for an empty ledger)."""

    seq: int
    entry_hash: bytes


def _stake_statuses(entries: list[Entry]) -> dict[bytes, StakeStatus]:
    """Each key's newest stake declaration minus every slash, from stake and slash entries."""
    newest: dict[bytes, StakeDeclaration] = {}
    slashed: dict[bytes, int] = {}
    for entry in entries:
        if isinstance(entry.body, E.SlashBody):
            key = entry.body.provider
            slashed[key] = slashed.get(key, 0) + entry.body.amount
        elif isinstance(entry.body, E.StakeBody):
            decl = entry.body.declaration
            held = newest.get(decl.provider)
            if held is None or decl.issued_at >= held.issued_at:
                newest[decl.provider] = decl
    return {key: StakeStatus(newest[key].amount if key in newest else 0, slashed.get(key, 0),
                             newest[key].issued_at if key in newest else None)
            for key in newest.keys() | slashed.keys()}  # fmt: skip


class LedgerReads(SqliteStore):
    """The queries of a ledger file (see `Ledger` for opening and writing)."""

    @staticmethod
    def _head(conn: sqlite3.Connection) -> ChainHead:
        row = conn.execute(
            "SELECT seq, entry_hash FROM entries ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return ChainHead(0, E.GENESIS_PREV) if row is None else ChainHead(row[0], bytes(row[1]))

    def head(self) -> ChainHead:
        """The chain head; publish it to let others notice a truncated ledger."""
        with self.snapshot() as conn:
            return self._head(conn)

    def balance(self, account: str) -> int:
        """Micro-credits in `account` (see entries.peer_account): the sum of its postings,
        kept running (one row read, however many jobs the account has paid for)."""
        row = self.read("SELECT balance FROM account_balances WHERE account = ?", (account,))
        return int(row[0][0]) if row else 0

    def balances(self) -> tuple[Balance, ...]:
        """Every account with postings and its balance, by account name."""
        rows = self.read("SELECT account, balance FROM balances ORDER BY account")
        return tuple(Balance(a, int(n)) for a, n in rows)

    def require_credit(self, account: str, amount: int) -> None:
        """InsufficientCreditError unless `account` holds at least `amount` micro-credits."""
        have = self.balance(account)
        if have < amount:
            raise InsufficientCreditError(
                f"{account} holds {have} micro-credits; the job needs up to {amount}"
            )

    def has_entry(self, kind: str, key: str) -> bool:
        """Whether an entry of `kind` with idempotency key `key` exists (a charge: job id hex)."""
        return bool(self.read("SELECT 1 FROM entries WHERE kind = ? AND idem_key = ?",
                               (kind, key)))

    def has_charge(self, job_id: bytes) -> bool:
        """Whether the job was already charged in this ledger."""
        return self.has_entry(E.ChargeBody.kind, job_id.hex())

    def _decode_rows(self, rows: list[Any]) -> list[Entry]:
        out = []
        for seq, body, prev, ehash, signer, sig in rows:
            try:
                _, at_ms, decoded = E.decode_body(bytes(body))
            except (LedgerError, ValueError, TypeError) as exc:
                raise LedgerIntegrityError(
                    f"entry {seq}: cannot decode; run `p2pinfer ledger --verify`"
                ) from exc
            except Exception as exc:
                raise LedgerIntegrityError(f"entry {seq}: cannot decode ({exc})") from exc
            out.append(Entry(seq, at_ms, decoded, bytes(prev), bytes(ehash), bytes(signer),
                             bytes(sig)))
        return out

    def entries(
        self, *, after_seq: int = 0, limit: int = -1, newest_first: bool = False
    ) -> list[Entry]:
        """Entries with seq > `after_seq`, oldest first (or newest first), at most `limit`."""
        order = "DESC" if newest_first else "ASC"
        rows = self.read(
            "SELECT seq, body, prev_hash, entry_hash, signer, signature FROM entries"
            f" WHERE seq > ? ORDER BY seq {order} LIMIT ?",
            (after_seq, limit),
        )
        return self._decode_rows(rows)

    def recent_payers(self, provider: bytes, limit: int) -> list[tuple[bytes, int]]:
        """(consumer key, unix ms) of the last `limit` charges `provider` recorded, oldest
        first: the keys that paid it lately, as a restarted provider remembers them."""
        rows = self.read(
            "SELECT seq, body, prev_hash, entry_hash, signer, signature FROM entries"
            " WHERE subject = ? AND kind = ? ORDER BY seq DESC LIMIT ?",
            (E.peer_account(provider), E.ChargeBody.kind, limit),
        )
        return [(entry.body.consumer, entry.at_ms) for entry in reversed(self._decode_rows(rows))
                if isinstance(entry.body, E.ChargeBody)]  # its subject names the provider

    def stake_of(self, provider: bytes) -> StakeStatus:
        """This ledger's view of `provider`'s stake: newest declaration minus all slashes."""
        rows = self.read(
            "SELECT seq, body, prev_hash, entry_hash, signer, signature FROM entries"
            " WHERE subject = ? AND kind IN ('stake', 'slash') ORDER BY seq",
            (E.peer_account(provider),),
        )
        return _stake_statuses(self._decode_rows(rows)).get(provider, NO_STAKE)

    def stakes(self) -> dict[bytes, StakeStatus]:
        """`stake_of` for every key this ledger holds a stake or slash entry for, in one read."""
        rows = self.read(
            "SELECT seq, body, prev_hash, entry_hash, signer, signature FROM entries"
            " WHERE kind IN ('stake', 'slash') ORDER BY seq"
        )
        return _stake_statuses(self._decode_rows(rows))
