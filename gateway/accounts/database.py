"""The gateway's own database: users, API keys, revoked token ids, usage and jobs, in SQLite.

One file, ``<data_dir>/gateway.db``, in WAL mode with ``synchronous=NORMAL``: a write that
returned is in the operating system's hands and survives the gateway being killed (only an
OS crash or power cut can lose the last moments, and never corrupts the file), for a tenth
of the cost of an fsync per call on the answer's critical path. Methods are plain blocking
calls, safe from any thread (one connection behind a lock), so the operator's CLI uses
them as they are; the gateway runs them with ``call``, on a worker thread, so its event
loop never waits on a disk flush. The schema is versioned with ``PRAGMA user_version``.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import astuple, dataclass
from functools import partial
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import trio

logger = logging.getLogger(__name__)

FILENAME = "gateway.db"
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{2,31}")
P = ParamSpec("P")
T = TypeVar("T")

# Each entry takes the schema from the version before it to its own index + 1.
_MIGRATIONS = [
    """
    CREATE TABLE users (
        name TEXT PRIMARY KEY COLLATE NOCASE,
        password TEXT,
        plan TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL
    );
    CREATE TABLE api_keys (
        jti TEXT PRIMARY KEY,
        user TEXT NOT NULL COLLATE NOCASE REFERENCES users(name),
        name TEXT NOT NULL,
        created REAL NOT NULL,
        expires_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE INDEX api_keys_by_user ON api_keys(user);
    CREATE TABLE revocations (
        jti TEXT PRIMARY KEY,
        expires_at REAL,
        revoked_at REAL NOT NULL
    );
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        day TEXT NOT NULL,
        user TEXT NOT NULL COLLATE NOCASE,
        key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        peer TEXT NOT NULL,
        kind TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        images INTEGER NOT NULL,
        status INTEGER NOT NULL,
        latency_ms INTEGER NOT NULL
    );
    CREATE INDEX usage_by_day ON usage(day, user);
    CREATE INDEX usage_by_user ON usage(user, day);
    """,
    # The accounts' own name (tokens are bound to it), admins, and invitations.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO meta VALUES ('accounts_id', lower(hex(randomblob(16))));
    ALTER TABLE users ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE invites (
        code_hash TEXT PRIMARY KEY,
        created REAL NOT NULL,
        expires_at REAL NOT NULL,
        used_by TEXT,
        used_at REAL
    );
    """,
    # Speech and transcriptions are charged by the seconds of audio they make or hear.
    """
    ALTER TABLE usage ADD COLUMN audio_seconds INTEGER NOT NULL DEFAULT 0;
    """,
    # Logins, so a user sees where they are signed in and ends any of them.
    """
    CREATE TABLE sessions (
        jti TEXT PRIMARY KEY,
        user TEXT NOT NULL COLLATE NOCASE REFERENCES users(name),
        created REAL NOT NULL,
        last_used REAL NOT NULL,
        expires_at REAL NOT NULL,
        agent TEXT NOT NULL,
        address TEXT,
        ended_at REAL
    );
    CREATE INDEX sessions_by_user ON sessions(user);
    """,
    # Jobs (gateway.accounts.jobs) and each user's secret that signs their webhooks.
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        user TEXT NOT NULL COLLATE NOCASE,
        key_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        token_exp REAL NOT NULL,
        kind TEXT NOT NULL,
        model TEXT NOT NULL,
        request TEXT NOT NULL,
        priority INTEGER NOT NULL,
        webhook TEXT,
        base_url TEXT NOT NULL,
        state TEXT NOT NULL,
        owner TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before REAL NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        started REAL,
        finished REAL,
        expires_at REAL,
        status INTEGER,
        result TEXT,
        error TEXT,
        node TEXT
    );
    CREATE INDEX jobs_by_user ON jobs(user, created);
    CREATE INDEX jobs_waiting ON jobs(state, priority, created);
    CREATE TABLE webhook_secrets (
        user TEXT PRIMARY KEY COLLATE NOCASE,
        secret TEXT NOT NULL
    );
    """,
]


class StoreError(Exception):
    """The database refused an operation."""


class UserExists(StoreError):
    pass


class InviteInvalid(StoreError):
    """No unused, unexpired invitation has that code."""


class SchemaTooNew(StoreError):
    """The file was written by a newer version of the gateway."""


@dataclass(frozen=True)
class UserRecord:
    name: str
    password: str | None  # the scrypt hash; None: the user cannot log in
    plan: str
    disabled: bool
    created: float
    admin: bool = False  # may use the admin routes (with an admin-scoped token)


@dataclass(frozen=True)
class KeyRecord:
    jti: str
    user: str
    name: str
    created: float
    expires_at: float
    revoked_at: float | None


@dataclass(frozen=True)
class SessionRecord:
    """One login: its session token's id, and the browser or program that holds it."""

    jti: str
    user: str
    created: float
    last_used: float
    expires_at: float
    agent: str  # the client's User-Agent, as it said
    address: str | None
    ended_at: float | None = None


@dataclass(frozen=True)
class UsageRecord:
    """One inference call, as billed."""

    ts: float
    day: str  # UTC, YYYY-MM-DD
    user: str
    key_id: str
    model: str
    peer: str
    kind: str
    prompt_tokens: int
    completion_tokens: int
    images: int
    status: int
    latency_ms: int
    audio_seconds: int = 0


@dataclass(frozen=True)
class UsageTotal:
    day: str
    user: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    images: int
    audio_seconds: int


@dataclass(frozen=True)
class DayTotal:
    """One user's quota counts for a day."""

    tokens: int
    images: int
    audio_seconds: int


@dataclass(frozen=True)
class UsageSum:
    """Calls summed over one user, one model or one day (``key``)."""

    key: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    images: int
    audio_seconds: int


# What usage may be summed by, and the column that holds it.
USAGE_GROUPS = {"user": "user", "model": "model", "date": "day"}


def check_username(name: str) -> None:
    """Raise ``ValueError`` for a name no user may have."""
    if not USERNAME.fullmatch(name):
        raise ValueError(
            "username must be 3-32 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )


class Store:
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

    @classmethod
    def open(cls, data_dir: Path) -> Store:
        return cls(data_dir / FILENAME)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
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
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(_MIGRATIONS):
                raise SchemaTooNew(
                    f"{self.path} has schema {version}; this gateway knows {len(_MIGRATIONS)}"
                )
            for target, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {target}")
                logger.info("%s: schema version %d", self.path, target)

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

    # --- users ---------------------------------------------------------------------------

    def add_user(
        self,
        name: str,
        password: str | None,
        plan: str,
        now: float,
        *,
        admin: bool = False,
        invite: str | None = None,
    ) -> UserRecord:
        """Add a user; with ``invite`` (a code's hash) only by using up that invitation, in
        the same transaction, so one code makes one user."""
        check_username(name)
        try:
            with self._transaction() as db:
                if invite is not None:
                    claimed = db.execute(
                        "UPDATE invites SET used_by = ?, used_at = ?"
                        " WHERE code_hash = ? AND used_at IS NULL AND expires_at > ?",
                        (name, now, invite, now),
                    ).rowcount
                    if not claimed:
                        raise InviteInvalid("the invite code is unknown, used or expired")
                db.execute(
                    "INSERT INTO users (name, password, plan, disabled, created, admin)"
                    " VALUES (?, ?, ?, 0, ?, ?)",
                    (name, password, plan, now, admin),
                )
        except sqlite3.IntegrityError as exc:
            raise UserExists(f"user {name!r} already exists") from exc
        return UserRecord(name, password, plan, False, now, admin)

    def user(self, name: str) -> UserRecord | None:
        rows = self._read("SELECT * FROM users WHERE name = ?", (name,))
        return _user(rows[0]) if rows else None

    def users(self) -> list[UserRecord]:
        return [_user(row) for row in self._read("SELECT * FROM users ORDER BY name")]

    def set_disabled(self, name: str, disabled: bool) -> bool:
        """False if there is no such user."""
        return self._write("UPDATE users SET disabled = ? WHERE name = ?", (disabled, name)) > 0

    def set_plan(self, name: str, plan: str) -> bool:
        return self._write("UPDATE users SET plan = ? WHERE name = ?", (plan, name)) > 0

    def set_admin(self, name: str, admin: bool) -> bool:
        return self._write("UPDATE users SET admin = ? WHERE name = ?", (admin, name)) > 0

    def set_password(self, name: str, password: str) -> bool:
        return self._write("UPDATE users SET password = ? WHERE name = ?", (password, name)) > 0

    # --- invitations ---------------------------------------------------------------------

    def add_invite(self, code_hash: str, now: float, expires_at: float) -> None:
        self._write(
            "INSERT INTO invites (code_hash, created, expires_at) VALUES (?, ?, ?)",
            (code_hash, now, expires_at),
        )

    # --- API keys and revocations --------------------------------------------------------

    def add_key(self, key: KeyRecord) -> None:
        self._write("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?)", astuple(key))

    def keys(self, user: str | None = None) -> list[KeyRecord]:
        where, params = ("WHERE user = ?", (user,)) if user is not None else ("", ())
        rows = self._read(f"SELECT * FROM api_keys {where} ORDER BY created, jti", params)
        return [KeyRecord(*row) for row in rows]

    def key(self, jti: str) -> KeyRecord | None:
        rows = self._read("SELECT * FROM api_keys WHERE jti = ?", (jti,))
        return KeyRecord(*rows[0]) if rows else None

    def revoke(self, jti: str, expires_at: float | None, now: float) -> None:
        """Refuse token ``jti`` from now on; ``expires_at`` None keeps the entry forever."""
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO revocations VALUES (?, ?, ?)", (jti, expires_at, now))
            db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE jti = ? AND revoked_at IS NULL",
                (now, jti),
            )
            db.execute(
                "UPDATE sessions SET ended_at = ? WHERE jti = ? AND ended_at IS NULL", (now, jti)
            )

    def revocations(self, now: float) -> dict[str, float | None]:
        """Revoked token ids that could still verify, with their expiry; expired ones go."""
        self._write("DELETE FROM revocations WHERE expires_at < ?", (now,))
        rows = self._read("SELECT jti, expires_at FROM revocations")
        return {str(jti): expires for jti, expires in rows}

    def delete_user(self, name: str, alias: str, now: float) -> list[tuple[str, float]] | None:
        """Remove ``name`` in one transaction: its keys and sessions revoked and gone, its
        usage kept under ``alias``. The ids revoked, with their expiry; None: no such user."""
        with self._transaction() as db:
            if not db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchall():
                return None
            live = db.execute(
                "SELECT jti, expires_at FROM api_keys WHERE user = ? AND revoked_at IS NULL"
                " UNION ALL SELECT jti, expires_at FROM sessions"
                " WHERE user = ? AND ended_at IS NULL",
                (name, name),
            ).fetchall()
            db.executemany(
                "INSERT OR IGNORE INTO revocations VALUES (?, ?, ?)",
                [(jti, exp, now) for jti, exp in live],
            )
            for table in ("api_keys", "sessions"):
                db.execute(f"DELETE FROM {table} WHERE user = ?", (name,))
            db.execute("UPDATE usage SET user = ? WHERE user = ?", (alias, name))
            db.execute("UPDATE invites SET used_by = ? WHERE used_by = ?", (alias, name))
            db.execute("DELETE FROM users WHERE name = ?", (name,))
        return [(str(jti), float(exp)) for jti, exp in live]

    # --- sessions ------------------------------------------------------------------------

    def add_session(self, session: SessionRecord) -> None:
        self._write("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", astuple(session))

    def sessions(self, user: str, now: float) -> list[SessionRecord]:
        """``user``'s sessions not ended nor expired, most recently used first."""
        rows = self._read(
            "SELECT * FROM sessions WHERE user = ? AND ended_at IS NULL AND expires_at > ?"
            " ORDER BY last_used DESC, jti",
            (user, now),
        )
        return [SessionRecord(*row) for row in rows]

    def session(self, jti: str) -> SessionRecord | None:
        rows = self._read("SELECT * FROM sessions WHERE jti = ?", (jti,))
        return SessionRecord(*rows[0]) if rows else None

    def touch_sessions(self, used: dict[str, float]) -> None:
        """Note when each session (by id) was last used, in one transaction."""
        with self._transaction() as db:
            db.executemany(
                "UPDATE sessions SET last_used = max(last_used, ?) WHERE jti = ?",
                [(at, jti) for jti, at in used.items()],
            )

    # --- usage ---------------------------------------------------------------------------

    def add_usage(self, records: list[UsageRecord]) -> None:
        """Write ``records`` in one transaction: one flush to disk for all of them."""
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO usage (ts, day, user, key_id, model, peer, kind, prompt_tokens,"
                " completion_tokens, images, status, latency_ms, audio_seconds)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [astuple(r) for r in records],
            )

    def usage(self, since_day: str, user: str | None = None) -> list[UsageTotal]:
        """Calls per day, user and model from ``since_day`` on, newest day first."""
        where, params = "day >= ?", [since_day]
        if user is not None:
            where, params = where + " AND user = ?", [since_day, user]
        rows = self._read(
            "SELECT day, user, model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),"
            f" SUM(images), SUM(audio_seconds) FROM usage WHERE {where}"
            " GROUP BY day, user, model ORDER BY day DESC, user, model",
            params,
        )
        return [UsageTotal(*row) for row in rows]

    def usage_by(self, since_day: str, group: str) -> list[UsageSum]:
        """Calls from ``since_day`` on summed by ``group`` (a key of ``USAGE_GROUPS``), the
        most tokens first: one row per user, model or day however many calls there were."""
        column = USAGE_GROUPS[group]
        rows = self._read(
            f"SELECT {column}, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(images),"
            f" SUM(audio_seconds) FROM usage WHERE day >= ? GROUP BY {column}"
            " ORDER BY SUM(prompt_tokens + completion_tokens) DESC, COUNT(*) DESC, 1",
            (since_day,),
        )
        return [UsageSum(*row) for row in rows]

    def day_totals(self, day: str) -> dict[str, DayTotal]:
        """What each user used on ``day``."""
        rows = self._read(
            "SELECT user, SUM(prompt_tokens + completion_tokens), SUM(images),"
            " SUM(audio_seconds) FROM usage WHERE day = ? GROUP BY user",
            (day,),
        )
        return {str(u): DayTotal(int(t), int(i), int(a)) for u, t, i, a in rows}

    def usage_records(self, user: str | None = None) -> list[UsageRecord]:
        """Every call, oldest first (for audits and tests; ``usage`` sums them)."""
        where, params = ("WHERE user = ?", (user,)) if user is not None else ("", ())
        rows = self._read(
            "SELECT ts, day, user, key_id, model, peer, kind, prompt_tokens, completion_tokens,"
            f" images, status, latency_ms, audio_seconds FROM usage {where} ORDER BY id",
            params,
        )
        return [UsageRecord(*row) for row in rows]


def _user(row: Any) -> UserRecord:
    name, password, plan, disabled, created, admin = row
    return UserRecord(name, password, plan, bool(disabled), created, bool(admin))
