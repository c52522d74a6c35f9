"""One SQLite connection behind a lock: opened in WAL mode and migrated, with the small
helpers the tables' methods are written in (``_transaction``, ``_read``, ``_write``)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, ParamSpec, Self, TypeVar

import trio

from gateway.accounts.database.schema import migrate

P = ParamSpec("P")
T = TypeVar("T")


class Connection:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created owner-only before SQLite opens it; the WAL files inherit the mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._workers = trio.CapacityLimiter(1)
        self._db.execute("PRAGMA busy_timeout = 10000")
        self._wal()
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        try:
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run one of this store's methods on a worker thread."""
        return await trio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._workers)

    def _wal(self) -> None:
        """Switch the file to WAL. When several processes open a new file at once, SQLite
        may refuse the switch at once ("database is locked") instead of waiting for its
        busy timeout, to avoid a deadlock: try again, for as long as that timeout."""
        deadline = time.monotonic() + 10
        while True:
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _migrate(self) -> None:
        # One transaction, the version read inside it: two processes opening a new file at
        # once cannot both create the tables.
        with self._transaction() as db:
            migrate(db, self.path)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _write(self, sql: str, params: Iterable[object] = ()) -> int:
        with self._transaction() as db:
            return db.execute(sql, tuple(params)).rowcount

    def _read(self, sql: str, params: Iterable[object] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction, for the areas that keep their own tables here (jobs)."""
        return self._transaction()

    def query(self, sql: str, params: Iterable[object] = ()) -> list[Any]:
        """Rows of one read, for the areas that keep their own tables here."""
        return self._read(sql, params)

    def data_version(self) -> int:
        """Changes whenever another connection (the operator's CLI) commits."""
        return int(self._read("PRAGMA data_version")[0][0])

    def accounts_id(self) -> str:
        """This database's random name, made with it: every gateway that opens this file
        shares it, and no other database has it."""
        return str(self._read("SELECT value FROM meta WHERE key = 'accounts_id'")[0][0])
