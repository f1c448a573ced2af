"""The reputation table on disk: <home>/reputation.sqlite3 (WAL), one row per peer.

Unlike the ledger this is mutable state (a score is replaced, not appended),
so it lives in its own file and the ledger stays strictly append-only. Every
change is a read-modify-write in one BEGIN IMMEDIATE transaction, computed
by the pure functions in verify.reputation; time comes from the injected clock.

A second table, `reporters`, counts per reporter the gossiped reports this node
re-ran itself and found right or false: the only thing that earns a reporter's
unconfirmed reports any weight here (`verify.reports.reporter_weight_pm`).
Schema 1 files gain that table when opened.

A third, `refusals` (schema 3), keeps who this node refuses and until when: consumer
keys and payer accounts that left a job unpaid (jobs/refusals.py), so that a restart
does not pardon them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from p2pinfer.errors import ReputationStoreError
from p2pinfer.store import SqliteStore
from p2pinfer.verify import reputation as R
from p2pinfer.verify.breaker import Breaker, BreakerState

REPUTATION_FILE_NAME = "reputation.sqlite3"
SCHEMA_VERSION = 3
_COLUMNS = (
    "peer_id", "score_ppm", "first_seen_ms", "updated_ms", "jobs_ok", "jobs_failed",
    "checks_passed", "checks_failed", "breaker_state", "opened_at_ms", "cooldown_ms", "trips",
    "probe_since_ms",
)
_UPSERT = (
    f"INSERT OR REPLACE INTO peers ({', '.join(_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(_COLUMNS))})"
)
_SCHEMA = """CREATE TABLE peers (
    peer_id TEXT PRIMARY KEY, score_ppm INTEGER NOT NULL, first_seen_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL, jobs_ok INTEGER NOT NULL, jobs_failed INTEGER NOT NULL,
    checks_passed INTEGER NOT NULL, checks_failed INTEGER NOT NULL,
    breaker_state TEXT NOT NULL, opened_at_ms INTEGER NOT NULL, cooldown_ms INTEGER NOT NULL,
    trips INTEGER NOT NULL, probe_since_ms INTEGER
)"""
_REPORTERS_SCHEMA = """CREATE TABLE reporters (
    peer_id TEXT PRIMARY KEY, confirmed INTEGER NOT NULL, false_reports INTEGER NOT NULL
)"""
#: Who this node refuses until when (jobs/refusals.py): "key:<hex>" or "account:<0x...>".
_REFUSALS_SCHEMA = """CREATE TABLE refusals (
    subject TEXT PRIMARY KEY, until_ms INTEGER NOT NULL, why TEXT NOT NULL
)"""


def reputation_path(home: Path) -> Path:
    return home / REPUTATION_FILE_NAME


def _to_row(rec: R.PeerReputation) -> tuple[Any, ...]:
    b = rec.breaker
    return (rec.peer_id, rec.score_ppm, rec.first_seen_ms, rec.updated_ms, rec.jobs_ok,
            rec.jobs_failed, rec.checks_passed, rec.checks_failed, b.state.value,
            b.opened_at_ms, b.cooldown_ms, b.trips, b.probe_since_ms)


def _from_row(row: tuple[Any, ...]) -> R.PeerReputation:
    brk = Breaker(BreakerState(row[8]), row[9], row[10], row[11], row[12])
    return R.PeerReputation(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], brk)


def _create_peers(conn: sqlite3.Connection) -> None:  # version 0 -> 1
    conn.execute(_SCHEMA)


def _create_reporters(conn: sqlite3.Connection) -> None:  # version 1 -> 2
    conn.execute(_REPORTERS_SCHEMA)


def _create_refusals(conn: sqlite3.Connection) -> None:  # version 2 -> 3
    conn.execute(_REFUSALS_SCHEMA)


_MIGRATIONS = (_create_peers, _create_reporters, _create_refusals)
assert len(_MIGRATIONS) == SCHEMA_VERSION


class ReputationBook(SqliteStore):
    """This node's reputation table. Thread-safe; processes may share the file."""

    what = "reputation table"
    error = ReputationStoreError

    def __init__(self, conn: sqlite3.Connection, path: Path, params: R.ReputationParams,
                 clock: Callable[[], int]) -> None:
        super().__init__(conn, path)
        self.params = params
        self._clock = clock

    @classmethod
    def open(
        cls,
        path: Path,
        params: R.ReputationParams = R.DEFAULT_REPUTATION,
        *,
        clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        create: bool = True,
    ) -> ReputationBook:
        """Open (creating it if `create`) the table at `path`."""
        if not create and not path.exists():
            raise ReputationStoreError(f"no reputation table at {path}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReputationStoreError(f"cannot open reputation table {path}: {exc}") from exc
        conn, _ = cls.connect(path, _MIGRATIONS)
        return cls(conn, path, params, clock)

    def __enter__(self) -> ReputationBook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _update(self, peer_id: str) -> Iterator[tuple[R.PeerReputation, list[R.PeerReputation]]]:
        """Yield (current record, out-list); the record put in out-list is saved atomically."""
        with self.write() as conn:
            out: list[R.PeerReputation] = []
            yield self._get(conn, peer_id), out
            if out:
                conn.execute(_UPSERT, _to_row(out[-1]))

    def _get(self, conn: sqlite3.Connection, peer_id: str) -> R.PeerReputation:
        row = conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM peers WHERE peer_id = ?", (peer_id,)
        ).fetchone()
        return R.new_peer(peer_id, self._clock(), self.params) if row is None else _from_row(row)

    def get(self, peer_id: str) -> R.PeerReputation:
        """The peer's record (a fresh one, not yet stored, for a peer never seen)."""
        with self.snapshot() as conn:
            return self._get(conn, peer_id)

    def record(self, peer_id: str, outcome: R.Outcome, *, report_weight_pm: int = 1000
               ) -> R.PeerReputation:
        """Apply a job or check outcome; returns the updated record."""
        with self._update(peer_id) as (rec, out):
            out.append(R.observe(rec, outcome, self._clock(), self.params,
                                 report_weight_pm=report_weight_pm))
        return out[-1]

    def convict(self, peer_id: str) -> R.PeerReputation:
        """Record proven cheating by `peer_id` (see reputation.convict)."""
        with self._update(peer_id) as (rec, out):
            out.append(R.convict(rec, self._clock(), self.params))
        return out[-1]

    def reporter(self, peer_id: str) -> R.ReporterRecord:
        """What this node re-checked of `peer_id`'s reports (zeros for a peer never seen)."""
        rows = self.read("SELECT confirmed, false_reports FROM reporters WHERE peer_id = ?",
                         (peer_id,))
        return R.ReporterRecord(peer_id, *rows[0]) if rows else R.ReporterRecord(peer_id)

    def record_report_check(self, peer_id: str, *, confirmed: bool) -> R.ReporterRecord:
        """Count one of `peer_id`'s reports this node re-ran: found right, or false."""
        with self.write() as conn:
            conn.execute(
                "INSERT INTO reporters (peer_id, confirmed, false_reports) VALUES"
                " (?, ?, ?) ON CONFLICT(peer_id) DO UPDATE SET"
                " confirmed = confirmed + excluded.confirmed,"
                " false_reports = false_reports + excluded.false_reports",
                (peer_id, int(confirmed), int(not confirmed)))
        return self.reporter(peer_id)

    def record_latency(self, peer_id: str, advertised_ms: int, observed_ms: int
                       ) -> R.PeerReputation:
        """Apply a latency observation against what the peer advertised."""
        with self._update(peer_id) as (rec, out):
            out.append(R.observe_latency(rec, advertised_ms, observed_ms, self._clock(),
                                         self.params))
        return out[-1]

    def allow(self, peer_id: str) -> bool:
        """Whether the peer's circuit breaker lets a job through now (may grant a probe)."""
        with self._update(peer_id) as (rec, out):
            ok, after = R.allow(rec, self._clock(), self.params)
            if after != rec:
                out.append(after)
        return ok

    def check_weight_pm(self, peer_id: str) -> int:
        """How often a validator here draws this peer for a check: the share (per mille,
        at least 1) of its jobs to spot-check now, or 0 while this node excludes it
        (breaker open; attack 78), from one read of its record."""
        rec = self.get(peer_id)
        if rec.breaker.state is BreakerState.OPEN:
            return 0
        return max(1, R.check_rate_pm(rec, self._clock(), self.params))

    def refuse(self, rows: Sequence[tuple[str, int, str]]) -> None:
        """Journal refusals, each (subject, until unix ms, why), so that a restarted node
        keeps them; a subject's later end stands. Those already over are dropped."""
        with self.write() as conn:
            conn.execute("DELETE FROM refusals WHERE until_ms <= ?", (self._clock(),))
            conn.executemany(
                "INSERT INTO refusals (subject, until_ms, why) VALUES (?, ?, ?)"
                " ON CONFLICT(subject) DO UPDATE SET why = excluded.why,"
                " until_ms = excluded.until_ms WHERE excluded.until_ms > until_ms", rows)

    def refusals(self) -> list[tuple[str, int, str]]:
        """The journaled refusals not yet over: (subject, until unix ms, why)."""
        return [(str(s), int(u), str(w)) for s, u, w in self.read(
            "SELECT subject, until_ms, why FROM refusals WHERE until_ms > ? ORDER BY until_ms",
            (self._clock(),))]

    def peers(self) -> tuple[R.PeerReputation, ...]:
        """Every stored peer, best score first."""
        rows = self.read(
            f"SELECT {', '.join(_COLUMNS)} FROM peers ORDER BY score_ppm DESC, peer_id")
        return tuple(_from_row(r) for r in rows)
