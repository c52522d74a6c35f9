"""The tables of who may call: users, their invitations, API keys, revoked token ids and
sessions, and deleting a user from all of them at once."""

from __future__ import annotations

import sqlite3
from dataclasses import astuple
from typing import Any

from gateway.accounts.database.connection import Connection
from gateway.accounts.database.errors import InviteInvalid, UserExists
from gateway.accounts.database.records import (
    KeyRecord,
    SessionRecord,
    UserRecord,
    check_username,
)


class UserTables(Connection):
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


def _user(row: Any) -> UserRecord:
    name, password, plan, disabled, created, admin = row
    return UserRecord(name, password, plan, bool(disabled), created, bool(admin))
