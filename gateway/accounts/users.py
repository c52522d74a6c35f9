"""Users and their API keys, and the checks every token meets (routes: ``gateway.api.accounts``).

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

import keys
from gateway.accounts.database import KeyRecord, Store, UserExists, UserRecord, check_username
from gateway.accounts.errors import Refused
from gateway.accounts.limits import Plan, Plans

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
            raise Refused(
                "registration is closed on this gateway", "registration_closed", status_hint=403
            )
        user = await self.store.call(
            create_user, self.store, name, password, self.plans.default, time.time()
        )
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
            raise Refused("wrong username or password", "invalid_credentials", status_hint=401)
        if user.disabled:
            raise Refused(f"user {user.name!r} is disabled", "account_disabled", status_hint=403)
        return user

    def session(self, user: str) -> tuple[str, keys.Claims]:
        """A session token for ``user``, with its claims."""
        return self._issue(user, self._session_ttl, "session")

    # --- API keys ------------------------------------------------------------------------

    async def create_key(self, user: str, name: str, days: int) -> tuple[KeyRecord, str]:
        """A new API key; its token is returned here once and never stored."""
        account = await self.store.call(self.store.user, user)
        if account is None:  # an operator-issued session token: nobody to own the key
            raise Refused(f"{user!r} has no account on this gateway", "no_account", status_hint=403)
        user = account.name
        now = time.time()
        live = [
            k
            for k in await self.store.call(self.store.keys, user)
            if k.revoked_at is None and k.expires_at > now
        ]
        if len(live) >= MAX_KEYS:
            raise Refused(f"at most {MAX_KEYS} live keys per user", "too_many_keys")
        token, claims = self._issue(user, days * DAY, "inference", uuid.uuid4().hex)
        record = KeyRecord(claims.jti, user, name, now, claims.exp, None)
        await self.store.call(self.store.add_key, record)
        return record, token

    async def keys_of(self, user: str) -> list[KeyRecord]:
        return await self.store.call(self.store.keys, user)

    async def revoke_key(self, user: str, key_id: str) -> KeyRecord:
        key = await self.store.call(self.store.key, key_id)
        if key is None or key.user.casefold() != user.casefold():
            raise Refused(f"no key {key_id!r}", "key_not_found", "id", status_hint=404)
        await self.revoke(key.jti, key.expires_at)
        return key

    def _signing_key(self) -> Ed25519PrivateKey:
        if self._signer is None:
            message = "this gateway holds no token signing key (jwt.key)"
            raise Refused(message, "signing_unavailable", status_hint=503)
        return self._signer

    def _issue(
        self, user: str, ttl: float, scope: str, jti: str | None = None
    ) -> tuple[str, keys.Claims]:
        signer = self._signing_key()
        token = keys.issue(signer, user, ttl, scope, jti)
        return token, keys.verify(token, signer.public_key())


def create_user(store: Store, name: str, password: str | None, plan: str, now: float) -> UserRecord:
    """Check and add a user; ``password`` is hashed here (None: token-only user). Blocking:
    the gateway runs it on a worker thread, the operator's CLI as is."""
    try:
        check_username(name)
    except ValueError as exc:
        raise Refused(str(exc), "invalid_username", "username") from exc
    try:
        hashed = None if password is None else keys.hash_password(password)
    except keys.WeakPassword as exc:
        raise Refused(str(exc), "weak_password", "password") from exc
    try:
        return store.add_user(name, hashed, plan, now)
    except UserExists as exc:
        raise Refused(str(exc), "username_taken", status_hint=409) from exc


def _public(user: UserRecord) -> UserRecord:
    """The record without its password hash: the caches never hold one."""
    return UserRecord(user.name, None, user.plan, user.disabled, user.created)
