"""Users and their API keys: ``/v1/auth/*`` and ``/v1/keys``, and the checks every token meets.

``Accounts`` keeps in memory what each request must consult (revoked token ids, disabled
users, each user's plan), loaded from the store at start and reloaded when another process
(the operator's CLI) changes the database. Tokens are issued here, signed with the
gateway's copy of the token key: a login gets a ``session`` token, an API key is an
``inference`` token whose ``jti`` is the key's id. Revoking a key refuses it at once.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

import keys
from gateway.accounts.database import KeyRecord, Store, UserExists, UserRecord, check_username
from gateway.accounts.limits import Plan, Plans
from gateway.api.auth import Session, User
from gateway.api.bodies import json_body, parse
from gateway.api.errors import ApiError
from gateway.api.services import services
from keys.passwords import MAX_LENGTH

logger = logging.getLogger(__name__)

DAY = 86400.0
DEFAULT_KEY_DAYS = 365
MAX_KEY_DAYS = 3650
MAX_KEYS = 100  # live keys per user

# Told of each revocation made here: (token id, expiry; inf when unknown).
RevokeHook = Callable[[str, float], None]


class Accounts:
    def __init__(
        self,
        store: Store,
        plans: Plans,
        signer: Ed25519PrivateKey | None,
        *,
        session_ttl: float = DAY,
        registration: bool = True,
    ) -> None:
        self.store = store
        self.plans = plans
        self.on_revoke: list[RevokeHook] = []
        self._signer = signer
        self._session_ttl = session_ttl
        self._registration = registration
        self._users: dict[str, UserRecord] = {}  # by casefolded name, without the hash
        self._revoked: dict[str, float] = {}
        self._unsaved: list[tuple[str, float]] = []  # revocations heard from other gateways
        self._version = -1

    # --- what every request consults -----------------------------------------------------

    def check(self, claims: keys.Claims) -> None:
        """The ``Guard`` the authenticator runs on every valid signature."""
        if claims.jti in self._revoked:
            raise keys.TokenError("token has been revoked")
        user = self._users.get(claims.sub.casefold())
        if user is not None and user.disabled:
            raise keys.TokenError(f"user {claims.sub!r} is disabled")

    def plan_of(self, user: str) -> Plan:
        """The user's plan; users the operator issued tokens to without an account get the
        default one."""
        found = self._users.get(user.casefold())
        return self.plans.get(found.plan if found else None)

    def profile(self, user: str) -> dict[str, Any]:
        found = self._users.get(user.casefold())
        return {
            "username": found.name if found else user,
            "plan": self.plan_of(user).as_json(),
            "disabled": bool(found and found.disabled),
        }

    # --- keeping the caches current ------------------------------------------------------

    async def load(self) -> None:
        """Read users and revocations from the store."""
        await self._reload(announce=False)

    async def _reload(self, announce: bool) -> None:
        self._version = await self.store.call(self.store.data_version)
        users = await self.store.call(self.store.users)
        revoked = await self.store.call(self.store.revocations, time.time())
        fresh = {jti: math.inf if exp is None else exp for jti, exp in revoked.items()}
        new = [(jti, exp) for jti, exp in fresh.items() if jti not in self._revoked]
        self._users.update({u.name.casefold(): _public(u) for u in users})
        # Merged, never replaced: a revocation made while this ran must not be forgotten.
        self._revoked.update(fresh)
        if announce:
            for jti, exp in new:  # revoked with the CLI: tell whoever forwards revocations
                self._announce(jti, exp)

    async def run(
        self,
        interval: float = 1.0,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Call ``refresh`` every ``interval`` seconds."""
        task_status.started()
        while True:
            await trio.sleep(interval)
            try:
                await self.refresh()
            except Exception:
                logger.exception("could not refresh accounts from %s", self.store.path)

    async def refresh(self) -> None:
        """Save revocations heard from elsewhere; reload if another process changed the
        database; forget revocations of tokens that have expired anyway."""
        await self._save_unsaved()
        if await self.store.call(self.store.data_version) != self._version:
            await self._reload(announce=True)
        now = time.time()
        self._revoked = {jti: exp for jti, exp in self._revoked.items() if exp >= now}

    async def _save_unsaved(self) -> None:
        unsaved, self._unsaved = self._unsaved, []
        for jti, expires_at in unsaved:
            exp = None if math.isinf(expires_at) else expires_at
            await self.store.call(self.store.revoke, jti, exp, time.time())

    # --- revocation ----------------------------------------------------------------------

    async def revoke(self, jti: str, expires_at: float) -> None:
        """Refuse ``jti`` from now on, here and (through ``on_revoke``) elsewhere."""
        exp = None if math.isinf(expires_at) else expires_at
        await self.store.call(self.store.revoke, jti, exp, time.time())
        self._revoked[jti] = expires_at
        self._announce(jti, expires_at)

    def revoke_remote(self, jti: str, expires_at: float) -> None:
        """A revocation another gateway made: refused at once, saved within a second."""
        if jti not in self._revoked:
            self._revoked[jti] = expires_at
            self._unsaved.append((jti, expires_at))

    def _announce(self, jti: str, expires_at: float) -> None:
        for hook in self.on_revoke:
            try:
                hook(jti, expires_at)
            except Exception:
                logger.exception("revocation hook failed")

    # --- users ---------------------------------------------------------------------------

    async def register(self, name: str, password: str) -> UserRecord:
        self._signing_key()
        if not self._registration:
            raise ApiError(403, "registration is closed on this gateway", "registration_closed")
        try:
            check_username(name)
        except ValueError as exc:
            raise ApiError(400, str(exc), "invalid_username", "username") from exc
        try:
            hashed = await trio.to_thread.run_sync(keys.hash_password, password)
        except keys.WeakPassword as exc:
            raise ApiError(400, str(exc), "weak_password", "password") from exc
        try:
            user = await self.store.call(
                self.store.add_user, name, hashed, self.plans.default, time.time()
            )
        except UserExists as exc:
            raise ApiError(409, f"username {name!r} is taken", "username_taken") from exc
        self._users[user.name.casefold()] = _public(user)
        logger.info("registered user %s", user.name)
        return user

    async def login(self, name: str, password: str) -> UserRecord:
        self._signing_key()
        user = await self.store.call(self.store.user, name)
        ok = await trio.to_thread.run_sync(
            keys.verify_password, password, user.password if user else None
        )
        if user is None or not ok:
            raise ApiError(401, "wrong username or password", "invalid_credentials")
        if user.disabled:
            raise ApiError(403, f"user {user.name!r} is disabled", "account_disabled")
        return user

    def session(self, user: str) -> tuple[str, keys.Claims]:
        """A session token for ``user``, with its claims."""
        return self._issue(user, self._session_ttl, "session")

    # --- API keys ------------------------------------------------------------------------

    async def create_key(self, user: str, name: str, days: int) -> tuple[KeyRecord, str]:
        """A new API key; its token is returned here once and never stored."""
        account = await self.store.call(self.store.user, user)
        if account is None:  # an operator-issued session token: nobody to own the key
            raise ApiError(403, f"{user!r} has no account on this gateway", "no_account")
        user = account.name
        now = time.time()
        live = [
            k
            for k in await self.store.call(self.store.keys, user)
            if k.revoked_at is None and k.expires_at > now
        ]
        if len(live) >= MAX_KEYS:
            raise ApiError(400, f"at most {MAX_KEYS} live keys per user", "too_many_keys")
        token, claims = self._issue(user, days * DAY, "inference", uuid.uuid4().hex)
        record = KeyRecord(claims.jti, user, name, now, claims.exp, None)
        await self.store.call(self.store.add_key, record)
        return record, token

    async def keys_of(self, user: str) -> list[KeyRecord]:
        return await self.store.call(self.store.keys, user)

    async def revoke_key(self, user: str, key_id: str) -> KeyRecord:
        key = await self.store.call(self.store.key, key_id)
        if key is None or key.user.casefold() != user.casefold():
            raise ApiError(404, f"no key {key_id!r}", "key_not_found", "id")
        await self.revoke(key.jti, key.expires_at)
        return key

    def _signing_key(self) -> Ed25519PrivateKey:
        if self._signer is None:
            raise ApiError(
                503, "this gateway holds no token signing key (jwt.key)", "signing_unavailable"
            )
        return self._signer

    def _issue(
        self, user: str, ttl: float, scope: str, jti: str | None = None
    ) -> tuple[str, keys.Claims]:
        signer = self._signing_key()
        token = keys.issue(signer, user, ttl, scope, jti)
        return token, keys.verify(token, signer.public_key())


def _public(user: UserRecord) -> UserRecord:
    """The record without its password hash: the caches never hold one."""
    return UserRecord(user.name, None, user.plan, user.disabled, user.created)


# --- routes -------------------------------------------------------------------------------


class Credentials(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=MAX_LENGTH)


class NewKey(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    ttl_days: int | None = Field(default=None, ge=1, le=MAX_KEY_DAYS)


def accounts(request: Request) -> Accounts:
    found = services(request).accounts
    if found is None:
        raise ApiError(503, "accounts are not enabled on this gateway", "accounts_disabled")
    return found


def _logged_in(found: Accounts, user: UserRecord) -> dict[str, Any]:
    token, claims = found.session(user.name)
    return {"user": found.profile(user.name), "token": token, "expires_at": int(claims.exp)}


def _key(key: KeyRecord) -> dict[str, Any]:
    return {
        "id": key.jti,
        "name": key.name,
        "created": int(key.created),
        "expires_at": int(key.expires_at),
        "revoked": key.revoked_at is not None,
    }


def install(app: FastAPI) -> None:
    @app.post("/v1/auth/register", status_code=201, openapi_extra=json_body(app, Credentials))
    async def register(request: Request) -> dict[str, Any]:
        found = accounts(request)
        body = await parse(request, Credentials)
        return _logged_in(found, await found.register(body.username, body.password))

    @app.post("/v1/auth/login", openapi_extra=json_body(app, Credentials))
    async def login(request: Request) -> dict[str, Any]:
        found = accounts(request)
        body = await parse(request, Credentials)
        return _logged_in(found, await found.login(body.username, body.password))

    @app.get("/v1/auth/me")
    async def me(request: Request, claims: User) -> dict[str, Any]:
        return accounts(request).profile(claims.sub)

    @app.get("/v1/keys")
    async def list_keys(request: Request, claims: Session) -> dict[str, Any]:
        return {"data": [_key(k) for k in await accounts(request).keys_of(claims.sub)]}

    @app.post("/v1/keys", status_code=201, openapi_extra=json_body(app, NewKey))
    async def create_key(request: Request, claims: Session) -> dict[str, Any]:
        found = accounts(request)
        body = await parse(request, NewKey)
        days = body.ttl_days or DEFAULT_KEY_DAYS
        key, token = await found.create_key(claims.sub, body.name, days)
        return {"id": key.jti, "name": key.name, "key": token, "expires_at": int(key.expires_at)}

    @app.delete("/v1/keys/{key_id}")
    async def revoke_key(request: Request, key_id: str, claims: Session) -> dict[str, Any]:
        key = await accounts(request).revoke_key(claims.sub, key_id)
        return {"id": key.jti, "revoked": True}
