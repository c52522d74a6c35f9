"""The schema, as the list of migrations that build it: ``PRAGMA user_version`` says how many
a file has had, and opening it runs the rest, in one transaction."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from gateway.accounts.database.errors import SchemaTooNew

logger = logging.getLogger(__name__)

# Each entry takes the schema from the version before it to its own index + 1; only ever
# append (a file that had an entry never runs it again).
MIGRATIONS = [
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
    # Usage indexes that hold every column the sums read: the operator's sums by model,
    # user or day, and a user's own, read an index alone, never the table's rows.
    """
    DROP INDEX usage_by_day;
    DROP INDEX usage_by_user;
    CREATE INDEX usage_by_day ON usage(
        day, model, user, prompt_tokens, completion_tokens, images, audio_seconds
    );
    CREATE INDEX usage_by_user ON usage(
        user, day, model, prompt_tokens, completion_tokens, images, audio_seconds
    );
    """,
]


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring ``db`` (inside a transaction) to the latest schema."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise SchemaTooNew(f"{path} has schema {version}; this gateway knows {len(MIGRATIONS)}")
    for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
        for statement in filter(str.strip, script.split(";")):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {target}")
        logger.info("%s: schema version %d", path, target)
