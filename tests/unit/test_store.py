"""The SQLite store base (p2pinfer/store.py) on real files: migrations, transactions,
error mapping, and the check that keeps disk access off the trio thread."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from p2pinfer.errors import StoreError
from p2pinfer.store import SqliteStore, StoreThreadError, strict_threads


class NotesStore(SqliteStore):
    what = "notes file"


def _v1(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE notes (text TEXT NOT NULL)")


def _v2(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE notes ADD COLUMN author TEXT NOT NULL DEFAULT 'nobody'")


def open_notes(path: Path, migrations: tuple = (_v1, _v2)) -> NotesStore:  # type: ignore[type-arg]
    conn, _ = NotesStore.connect(path, migrations)
    return NotesStore(conn, path)


def test_an_old_file_is_migrated_once_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    old = open_notes(path, (_v1,))
    with old.write() as conn:
        conn.execute("INSERT INTO notes (text) VALUES ('kept')")
    old.close()
    store = open_notes(path)
    assert store.read("SELECT text, author FROM notes") == [("kept", "nobody")]
    assert store.read("PRAGMA user_version") == [(2,)]
    assert store.read("PRAGMA journal_mode") == [("wal",)]
    assert store.read("PRAGMA synchronous") == [(2,)]  # FULL
    store.close()
    conn, found = NotesStore.connect(path, (_v1, _v2))  # at the current version: no step runs
    assert found == 2
    conn.close()


def test_a_newer_file_is_refused_with_the_stores_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    open_notes(path).close()
    with pytest.raises(StoreError, match=r"notes file .* has schema version 2"):
        open_notes(path, (_v1,))


def test_a_failed_write_leaves_nothing_and_is_a_store_error(tmp_path: Path) -> None:
    store = open_notes(tmp_path / "notes.sqlite")
    with pytest.raises(StoreError, match="cannot write to notes file"), store.write() as conn:
        conn.execute("INSERT INTO notes (text) VALUES ('half')")
        conn.execute("INSERT INTO notes (text) VALUES (NULL)")  # NOT NULL
    with pytest.raises(ValueError), store.write() as conn:
        conn.execute("INSERT INTO notes (text) VALUES ('half')")
        raise ValueError("the caller changed its mind")
    assert store.read("SELECT COUNT(*) FROM notes") == [(0,)]
    with pytest.raises(StoreError, match="cannot read notes file"):
        store.read("SELECT nothing FROM nowhere")


def test_a_busy_file_is_a_store_error_that_says_busy(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    open_notes(path).close()
    conn, _ = NotesStore.connect(path, (_v1, _v2), busy_timeout_s=0.05)
    store = NotesStore(conn, path)
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="busy"), store.write():
            pass
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_strict_mode_refuses_the_store_on_the_trio_thread_and_run_is_allowed(
    tmp_path: Path
) -> None:
    store = open_notes(tmp_path / "notes.sqlite")

    async def main() -> list[object]:
        with pytest.raises(StoreThreadError):
            store.read("SELECT 1")
        with pytest.raises(StoreThreadError), store.write():
            pass
        return await store.run(store.read, "SELECT 1")

    with strict_threads():
        assert trio.run(main) == [(1,)]
        assert store.read("SELECT 1") == [(1,)]  # outside trio: a CLI, a worker thread


def test_the_stores_load_no_trio_until_they_run() -> None:
    # docs/market.md: the market is plain Python and SQLite; a CLI reading a ledger
    # starts no event-loop machinery.
    import subprocess
    import sys

    code = ("import sys, p2pinfer.market.ledger, p2pinfer.verify.reputation_store,"
            " p2pinfer.gov.store;"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'libp2p'));"
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stdout + run.stderr
