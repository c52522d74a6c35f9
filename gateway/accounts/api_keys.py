"""A user's API keys: ``inference`` tokens whose ``jti`` is the key's row, so a key can be
listed and revoked. The token itself is handed out once, at creation, and never stored."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

from gateway.accounts.database import KeyRecord, Store
from gateway.accounts.errors import Refused
from gateway.accounts.tokens import DAY, Signer

DEFAULT_KEY_DAYS = 365
MAX_KEYS = 100  # live keys per user

# Revokes one token id with its expiry (``Accounts.revoke``).
Revoke = Callable[[str, float], Awaitable[None]]


class ApiKeys:
    def __init__(self, store: Store, signer: Signer, revoke: Revoke, max_ttl: float) -> None:
        self._store = store
        self._signer = signer
        self._revoke = revoke
        self._max_ttl = max_ttl

    async def create(self, user: str, name: str, days: int | None = None) -> tuple[KeyRecord, str]:
        """A new API key of ``user`` and its token."""
        account = await self._store.call(self._store.user, user)
        if account is None:  # deleted since its token was checked
            raise Refused(f"{user!r} has no account on this gateway", "no_account", status_hint=403)
        user = account.name
        ttl = min(DEFAULT_KEY_DAYS * DAY, self._max_ttl) if days is None else days * DAY
        if ttl > self._max_ttl:
            most = self._max_ttl // DAY
            raise Refused(f"a key may live at most {most:g} days here", "ttl_too_long", "ttl_days")
        now = time.time()
        live = [
            k
            for k in await self._store.call(self._store.keys, user)
            if k.revoked_at is None and k.expires_at > now
        ]
        if len(live) >= MAX_KEYS:
            raise Refused(f"at most {MAX_KEYS} live keys per user", "too_many_keys")
        token, claims = self._signer.issue(user, ttl, "inference", uuid.uuid4().hex)
        record = KeyRecord(claims.jti, user, name, now, claims.exp, None)
        await self._store.call(self._store.add_key, record)
        return record, token

    async def of(self, user: str) -> list[KeyRecord]:
        return await self._store.call(self._store.keys, user)

    async def revoke(self, user: str, key_id: str) -> KeyRecord:
        """Revoke one of ``user``'s keys; 404 for one that is not theirs."""
        key = await self._store.call(self._store.key, key_id)
        if key is None or key.user.casefold() != user.casefold():
            raise Refused(f"no key {key_id!r}", "key_not_found", "id", status_hint=404)
        await self._revoke(key.jti, key.expires_at)
        return key
