"""One SQLite file of a node's state: the base of the ledger, the reputation book and the
governance store.

What every store shares lives here, once: the connection (WAL, synchronous=FULL, a busy
timeout, autocommit so transactions are explicit), the schema version in
`PRAGMA user_version` with migrations from each older version, writes in one
`BEGIN IMMEDIATE` transaction (so writers in several threads or processes queue on
SQLite's write lock, and an interrupted write vanishes whole), `sqlite3.Error` mapped
to the store's own error class (a `StoreError`), and `run`: the way trio code calls a
store, in a worker thread under the store's one `CapacityLimiter`, never on the loop.

With `P2PINFER_STRICT_STORE_THREADS=1` in the environment (or `with strict_threads():`),
touching the file from the trio thread raises `StoreThreadError`: tests turn it on to
prove a path never blocks the event loop on disk.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from p2pinfer.errors import StoreError

if TYPE_CHECKING:
    import trio

T = TypeVar("T")

#: A migration takes an open transaction at version N to version N + 1.
Migration = Callable[[sqlite3.Connection], None]

_strict = os.environ.get("P2PINFER_STRICT_STORE_THREADS", "") not in ("", "0")


class StoreThreadError(AssertionError):
    """A store was read or written on the trio thread (strict mode): a bug, not a user error."""


@contextmanager
def strict_threads(on: bool = True) -> Iterator[None]:
    """Within the block, the on-the-trio-thread check is on (or off); then as before."""
    global _strict
    was, _strict = _strict, on
    try:
        yield
    finally:
        _strict = was


def _on_trio_thread() -> bool:
    if "trio" not in sys.modules:  # the stores import trio only to run: a CLI never does
        return False
    import trio

    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


def _check_thread(what: str) -> None:
    if _strict and _on_trio_thread():
        raise StoreThreadError(
            f"{what} touched on the trio thread; call it through `await store.run(...)`")


def connect(path: Path, error: type[StoreError], what: str, *,
            busy_timeout_s: float = 10.0) -> sqlite3.Connection:
    """A connection to `path` in WAL mode with synchronous=FULL (`error` if it cannot be
    opened). Autocommit: every transaction is begun explicitly."""
    try:
        conn = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None,
                               check_same_thread=False)
    except sqlite3.Error as exc:
        raise error(f"cannot open {what} {path}: {exc}") from exc
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    except sqlite3.Error as exc:
        conn.close()
        raise error(f"cannot open {what} {path}: {exc}") from exc
    return conn


def migrate(conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration],
            error: type[StoreError], what: str) -> int:
    """Bring the file to version `len(migrations)`, running `migrations[v]` for each older
    version v, all in one transaction; the version the file had. A file at the current
    version is only read (a plain BEGIN: opening never waits for, or blocks, a writer);
    a newer one is refused with `error`."""
    current = len(migrations)
    try:
        seen = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute("BEGIN" if seen == current else "BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > current:
                raise error(f"{what} {path} has schema version {version}; this p2pinfer "
                            f"reads version {current}")
            for step in migrations[version:]:
                step(conn)
            if version != current:
                conn.execute(f"PRAGMA user_version = {current}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise error(f"cannot open {what} {path}: {exc}") from exc
    return version


class SqliteStore:
    """One connection to one file, shared by threads under one lock; writes queue on
    SQLite's lock across processes. Subclasses add the domain's reads and writes."""

    #: What the store is called in error messages ("ledger", "reputation table").
    what = "store"
    #: Raised for every SQLite failure of this store.
    error: type[StoreError] = StoreError

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = threading.RLock()
        self._limiter: trio.CapacityLimiter | None = None  # made by the first `run`

    @classmethod
    def connect(cls, path: Path, migrations: Sequence[Migration], *,
                busy_timeout_s: float = 10.0) -> tuple[sqlite3.Connection, int]:
        """Open `path` (created if missing) and migrate it: (connection, the version found)."""
        conn = connect(path, cls.error, cls.what, busy_timeout_s=busy_timeout_s)
        try:
            return conn, migrate(conn, path, migrations, cls.error, cls.what)
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- from trio -------------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker thread, one at a time per store: how trio code reads or
        writes this store without blocking the event loop."""
        import trio

        if self._limiter is None:
            self._limiter = trio.CapacityLimiter(1)
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    # -- transactions ----------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE, COMMIT, or ROLLBACK on any exception.
        A busy file raises `error` ("busy or unwritable"); other SQLite errors too."""
        _check_thread(f"{self.what} {self.path}")
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self.error(f"{self.what} {self.path} is busy or unwritable: {exc}") from exc
            try:
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self.error(f"cannot write to {self.what} {self.path}: {exc}") from exc

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction, for reads that must agree with each other."""
        _check_thread(f"{self.what} {self.path}")
        with self._lock:
            try:
                self._conn.execute("BEGIN")
                try:
                    yield self._conn
                finally:
                    self._conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                raise self.error(f"cannot read {self.what} {self.path}: {exc}") from exc

    def read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """The rows of one query (`error` if the file cannot be read)."""
        _check_thread(f"{self.what} {self.path}")
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise self.error(f"cannot read {self.what} {self.path}: {exc}") from exc
