"""Logins a user can see and end: each session token is a row in the store, with the
browser that holds it and when it was last used.

Ending a session revokes its token id, so it is refused at once, here and on every gateway
sharing the database. When a session was last used is noted in memory on each request and
written in one transaction by the accounts' refresh loop: no disk write on a request's path.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import keys
from gateway.accounts.database import SessionRecord, Store
from gateway.accounts.errors import Refused

MAX_AGENT = 256  # characters of User-Agent kept

# Revokes one token id with its expiry (``Accounts.revoke``).
Revoke = Callable[[str, float], Awaitable[None]]


class Sessions:
    def __init__(self, store: Store, revoke: Revoke) -> None:
        self._store = store
        self._revoke = revoke
        self._used: dict[str, float] = {}  # session id → last use not yet written

    async def start(self, claims: keys.Claims, agent: str, address: str | None) -> None:
        """Record the login that ``claims`` (a fresh session token's) stands for."""
        now = time.time()
        record = SessionRecord(
            claims.jti, claims.sub, now, now, claims.exp, agent[:MAX_AGENT], address
        )
        await self._store.call(self._store.add_session, record)

    def seen(self, claims: keys.Claims) -> None:
        """A session token was just used."""
        if claims.scope == "session":
            self._used[claims.jti] = time.time()

    async def flush(self) -> None:
        """Write the last uses noted since the previous flush."""
        used, self._used = self._used, {}
        if used:
            await self._store.call(self._store.touch_sessions, used)

    async def of(self, user: str) -> list[SessionRecord]:
        """``user``'s live sessions, with last uses not yet written filled in."""
        found = await self._store.call(self._store.sessions, user, time.time())
        return [_with_use(s, self._used.get(s.jti)) for s in found]

    async def end(self, user: str, jti: str) -> SessionRecord:
        """End one of ``user``'s sessions; 404 for one that is not theirs or is over."""
        found = await self._store.call(self._store.session, jti)
        if (
            found is None
            or found.user.casefold() != user.casefold()
            or found.ended_at is not None
            or found.expires_at <= time.time()
        ):
            raise Refused(f"no session {jti!r}", "session_not_found", "id", status_hint=404)
        await self._revoke(found.jti, found.expires_at)
        return found

    async def end_all(self, user: str, keep: str | None = None) -> list[str]:
        """End every live session of ``user`` but ``keep``; the ids ended."""
        ended = [s for s in await self.of(user) if s.jti != keep]
        for session in ended:
            await self._revoke(session.jti, session.expires_at)
        return [s.jti for s in ended]


def _with_use(session: SessionRecord, used: float | None) -> SessionRecord:
    return (
        session if used is None or used <= session.last_used else replace(session, last_used=used)
    )
