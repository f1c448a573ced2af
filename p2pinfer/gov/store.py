"""The governance messages this node keeps, verified, in SQLite (`<home>/gov.sqlite`, WAL,
synchronous=FULL, schema version in `user_version`: p2pinfer/store.py).

Each row is the signed bytes received, when this node first saw it (`first_seen`, ms,
from its own clock: never a time the message claims) and whether its author had stake
verified here at that time (`staked`). Every key is free, so what one author, and all
authors without verified stake together, may keep is bounded (`MAX_PER_AUTHOR`,
`MAX_UNSTAKED`); a full store refuses new messages, and `GovService` deletes closed
proposals and their votes after a while, so a flood fills the store only until it
expires. Messages are decoded once, at open, and kept in memory: the node re-tallies
every few seconds and decoding thousands of rows each time cost whole CPU seconds.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from p2pinfer.errors import GovStoreError, ProtocolError
from p2pinfer.gov.messages import GovMessage, Proposal, Vote, decode_message
from p2pinfer.store import SqliteStore

log = logging.getLogger(__name__)

#: The most messages one node keeps (a bound on memory, disk and what a sync stream sends).
MAX_MESSAGES = 10_000
#: The most messages one author may have stored: an honest staker proposes rarely and
#: votes once per proposal, so 32 covers many proposals open at once.
MAX_PER_AUTHOR = 32
#: The most messages kept from authors without stake verified here (unlimited free keys):
#: a flood of them fills this share only, never the room of staked authors.
MAX_UNSTAKED = 1_000


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def gov_path(home: Path) -> Path:
    return home / "gov.sqlite"


@dataclass(frozen=True)
class StoredMessage:
    message: GovMessage
    raw: bytes
    first_seen: int  # ms, this node's clock
    staked: bool  # the author had stake verified here when it was stored


def raw_digest(raw: bytes) -> bytes:
    """What the store recognises received bytes by, before decoding them."""
    return hashlib.sha256(raw).digest()


_COLUMNS_V1 = ("id BLOB PRIMARY KEY, kind TEXT NOT NULL, proposal BLOB NOT NULL,"
               " raw BLOB NOT NULL, first_seen INTEGER NOT NULL DEFAULT 0,"
               " staked INTEGER NOT NULL DEFAULT 0")


def _to_v1(conn: sqlite3.Connection) -> None:
    """Version 0 -> 1: a new file gets the table; a file from before versions were kept
    (user_version 0, with or without first-seen columns) keeps its rows and gains them."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(gov_messages)")}
    if not columns:
        conn.execute(f"CREATE TABLE gov_messages ({_COLUMNS_V1})")
    elif "first_seen" not in columns:  # a store from before first-seen times were kept
        conn.execute("ALTER TABLE gov_messages ADD COLUMN first_seen INTEGER NOT NULL DEFAULT 0")
        conn.execute("ALTER TABLE gov_messages ADD COLUMN staked INTEGER NOT NULL DEFAULT 0")


#: migrations[v] takes a file from user_version v to v + 1 (store.migrate).
_MIGRATIONS = (_to_v1,)
SCHEMA_VERSION = len(_MIGRATIONS)


class GovStore(SqliteStore):
    """Thread-safe (one connection, one lock): the node reads it from worker threads.

    `clock_ms` stamps rows stored before first-seen times were kept (they count as
    first seen when this version opened the store)."""

    what = "governance store"
    error = GovStoreError

    def __init__(self, path: Path, clock_ms: Callable[[], int] | None = None) -> None:
        conn, _ = self.connect(path, _MIGRATIONS)
        super().__init__(conn, path)
        self._messages: dict[bytes, StoredMessage] = {}
        self._by_author: Counter[bytes] = Counter()
        self._unstaked = 0
        self._digests: set[bytes] = set()
        try:
            self._load((clock_ms or wall_ms)())
        except BaseException:
            self.close()
            raise

    def _load(self, now: int) -> None:
        bad: list[bytes] = []
        with self.write() as conn:
            for mid, raw, first_seen, staked in conn.execute(
                    "SELECT id, raw, first_seen, staked FROM gov_messages").fetchall():
                try:
                    message = decode_message(bytes(raw))
                except ProtocolError as exc:  # e.g. a value outside today's bounds
                    log.warning("governance message dropped from the store id=%s reason=%s",
                                bytes(mid).hex()[:16], exc)
                    bad.append(bytes(mid))
                    continue
                if not first_seen:
                    first_seen = now
                    conn.execute("UPDATE gov_messages SET first_seen = ? WHERE id = ?",
                                 (now, mid))
                self._remember(StoredMessage(message, bytes(raw), int(first_seen),
                                             bool(staked)))
            conn.executemany("DELETE FROM gov_messages WHERE id = ?", [(m,) for m in bad])

    def _remember(self, stored: StoredMessage) -> None:
        self._messages[stored.message.id] = stored
        self._by_author[stored.message.author] += 1
        self._unstaked += not stored.staked
        self._digests.add(raw_digest(stored.raw))

    # -- the door ------------------------------------------------------------------------

    def knows_raw(self, raw: bytes) -> bool:
        """Whether exactly these bytes are stored (checked before decoding or verifying)."""
        with self._lock:
            return raw_digest(raw) in self._digests

    def refusal(self, message: GovMessage, staked: bool) -> str:
        """Why `message` would not be stored now ("" if it would)."""
        with self._lock:
            return self._refusal_locked(message, staked)

    def _refusal_locked(self, message: GovMessage, staked: bool) -> str:
        if message.id in self._messages:
            return "already stored"
        if self._by_author[message.author] >= MAX_PER_AUTHOR:
            return f"its author has {MAX_PER_AUTHOR} messages stored"
        if not staked and self._unstaked >= MAX_UNSTAKED:
            return f"{MAX_UNSTAKED} messages from authors without verified stake are stored"
        if len(self._messages) >= MAX_MESSAGES:
            return f"the store is full ({MAX_MESSAGES} messages)"
        return ""

    def add(self, message: GovMessage, first_seen: int, staked: bool) -> bool:
        """Store a verified message first seen at `first_seen` (ms); False if it was
        already stored or a bound refuses it (`refusal`)."""
        pid = message.id if isinstance(message, Proposal) else message.proposal_id
        kind = "proposal" if isinstance(message, Proposal) else "vote"
        raw = message.encode()
        with self._lock:
            if self._refusal_locked(message, staked):
                return False  # before any transaction: a flood of refusals costs no disk
            with self.write() as conn:
                conn.execute(
                    "INSERT INTO gov_messages (id, kind, proposal, raw, first_seen, staked)"
                    " VALUES (?,?,?,?,?,?)", (message.id, kind, pid, raw, first_seen,
                                               int(staked)))
            self._remember(StoredMessage(message, raw, first_seen, staked))
            return True

    def delete(self, ids: Iterable[bytes]) -> int:
        """Forget these messages; how many were stored."""
        with self._lock:
            gone = [self._messages[mid] for mid in dict.fromkeys(ids) if mid in self._messages]
            if not gone:
                return 0
            with self.write() as conn:  # memory changes only once the disk has
                conn.executemany("DELETE FROM gov_messages WHERE id = ?",
                                 [(stored.message.id,) for stored in gone])
            for stored in gone:
                del self._messages[stored.message.id]
                author = stored.message.author
                self._by_author[author] -= 1
                if self._by_author[author] <= 0:
                    del self._by_author[author]
                self._unstaked -= not stored.staked
                self._digests.discard(raw_digest(stored.raw))
        return len(gone)

    # -- reading -------------------------------------------------------------------------

    def stored(self) -> list[StoredMessage]:
        """Every stored message (a snapshot)."""
        with self._lock:
            return list(self._messages.values())

    def proposal(self, pid: bytes) -> Proposal | None:
        with self._lock:
            stored = self._messages.get(pid)
        found = stored.message if stored is not None else None
        return found if isinstance(found, Proposal) else None

    def count(self) -> int:
        with self._lock:
            return len(self._messages)

    def most_by_one_author(self) -> int:
        """The most messages any one author has stored (at most MAX_PER_AUTHOR)."""
        with self._lock:
            return max(self._by_author.values(), default=0)

    def sync_messages(self, limit: int = MAX_MESSAGES) -> list[tuple[bytes, bool]]:
        """Up to `limit` stored messages as (signed bytes, staked author when stored):
        proposals before votes, those of staked authors first, then by id (what a sync
        stream serves)."""
        with self._lock:
            rows = sorted(self._messages.values(),
                          key=lambda s: (isinstance(s.message, Vote), not s.staked,
                                         s.message.id))
        return [(s.raw, s.staked) for s in rows[:limit]]

    def proposals(self) -> list[Proposal]:
        return [s.message for s in self.stored() if isinstance(s.message, Proposal)]

    def votes(self) -> list[Vote]:
        return [s.message for s in self.stored() if isinstance(s.message, Vote)]
