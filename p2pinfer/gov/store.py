"""Every governance message this node has seen, verified, in SQLite (`<home>/gov.sqlite`).

Stored as the signed bytes received; a message is stored once (keyed by its id).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from p2pinfer.gov.messages import GovMessage, Proposal, Vote, decode_message

#: The most messages one node keeps and serves (a bound on what a sync stream sends).
MAX_MESSAGES = 10_000


def gov_path(home: Path) -> Path:
    return home / "gov.sqlite"


class GovStore:
    """Thread-safe (one connection, one lock): the node reads it from worker threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS gov_messages (id BLOB PRIMARY KEY, kind TEXT NOT NULL,"
            " proposal BLOB NOT NULL, raw BLOB NOT NULL)")

    def close(self) -> None:
        self._conn.close()

    def add(self, message: GovMessage) -> bool:
        """Store a verified message; False if it was already stored or the store is full."""
        pid = message.id if isinstance(message, Proposal) else message.proposal_id
        kind = "proposal" if isinstance(message, Proposal) else "vote"
        with self._lock:
            if self.count_locked() >= MAX_MESSAGES:
                return False
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO gov_messages (id, kind, proposal, raw) VALUES (?,?,?,?)",
                (message.id, kind, pid, message.encode()))
            return cur.rowcount == 1

    def count_locked(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM gov_messages").fetchone()[0])

    def raw_messages(self) -> list[bytes]:
        """Every stored message as signed bytes, proposals first, then by id."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT raw FROM gov_messages ORDER BY kind = 'vote', id").fetchall()
        return [bytes(r[0]) for r in rows]

    def proposals(self) -> list[Proposal]:
        return [m for m in self._all() if isinstance(m, Proposal)]

    def votes(self) -> list[Vote]:
        return [m for m in self._all() if isinstance(m, Vote)]

    def _all(self) -> list[GovMessage]:
        return [decode_message(raw) for raw in self.raw_messages()]
