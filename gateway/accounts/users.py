"""Users, and the checks every token meets (routes: ``gateway.api.accounts``).

``Accounts`` keeps in memory what each request must consult (revoked token ids, disabled
users, each user's plan), loaded from the store at start and reloaded when another process
(the operator's CLI) changes the database. A login gets a ``session`` token; API keys are
in ``api_keys``, how tokens are signed and bound to this database in ``tokens``. Revoking
a token refuses it at once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import keys
from gateway.accounts.api_keys import ApiKeys
from gateway.accounts.database import (
    InviteInvalid,
    Store,
    UserExists,
    UserRecord,
    check_username,
)
from gateway.accounts.errors import Refused
from gateway.accounts.invites import invite_hash, new_invite
from gateway.accounts.limits import Plan, Plans
from gateway.accounts.sessions import Sessions
from gateway.accounts.throttle import PasswordWork, SignInThrottle
from gateway.accounts.tokens import DAY, MAX_TOKEN_TTL, Signer, audience_of
from gateway.config import Registration
from keys.passwords import check_strength

logger = logging.getLogger(__name__)

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
        registration: Registration = "closed",
        max_token_ttl: float = MAX_TOKEN_TTL,
        cost: keys.ScryptCost = keys.OWASP,
        throttle: SignInThrottle | None = None,
        hashing: PasswordWork | None = None,
    ) -> None:
        if session_ttl > max_token_ttl:
            raise ValueError("session_ttl may not be longer than max_token_ttl")
        self.store = store
        self.plans = plans
        self.on_revoke: list[RevokeHook] = []
        self.audience = audience_of(store)
        self.max_token_ttl = max_token_ttl
        self._signer = Signer(signer, self.audience)
        self._session_ttl = session_ttl
        self._registration = registration
        self._cost = cost
        self._throttle = throttle or SignInThrottle()
        self._hashing = hashing or PasswordWork()
        self._users: dict[str, UserRecord] = {}  # by casefolded name, without the hash
        self._revoked: dict[str, float] = {}
        self._unsaved: list[tuple[str, float]] = []  # revocations heard from other gateways
        self._version = -1
        self.sessions = Sessions(store, self.revoke)
        self.api_keys = ApiKeys(store, self._signer, self.revoke, max_token_ttl)

    # --- what every request consults -----------------------------------------------------

    async def check(self, claims: keys.Claims) -> None:
        """The ``Guard`` the authenticator runs on every valid signature: the token must
        name an enabled user of the table who existed when it was issued. Operator-issued
        tokens are stored nowhere, so this is what ends them with the account."""
        if claims.jti in self._revoked:
            raise keys.TokenError("token has been revoked")
        user = self._users.get(claims.sub.casefold())
        if user is None:  # maybe added by another process since the last reload
            found = await self.store.call(self.store.user, claims.sub)
            user = None if found is None else self.remember(found)
        if user is None:
            raise keys.TokenError(f"user {claims.sub!r} has no account on this gateway")
        if user.disabled:
            raise keys.TokenError(f"user {user.name!r} is disabled")
        # iat is in whole seconds: a token issued in the second the account was made passes.
        if claims.iat < math.floor(user.created):
            # The name was deleted and taken again: the token was the old account's.
            raise keys.TokenError(f"token was issued before the account {user.name!r} was made")
        self.sessions.seen(claims)

    def plan_of(self, user: str) -> Plan:
        """The user's plan; a token naming nobody in the table gets the default one."""
        found = self._users.get(user.casefold())
        return self.plans.get(found.plan if found else None)

    def profile(self, user: str) -> dict[str, Any]:
        found = self._users.get(user.casefold())
        return {
            "username": found.name if found else user,
            "plan": self.plan_of(user).as_json(),
            "disabled": bool(found and found.disabled),
            "admin": bool(found and found.admin),
        }

    async def is_admin(self, user: str) -> bool:
        """Whether this gateway's table says ``user`` is an enabled admin. Read from the
        database each time: admin calls are rare, and a change must count at once."""
        found = await self.store.call(self.store.user, user)
        return found is not None and found.admin and not found.disabled

    # --- keeping the caches current ------------------------------------------------------

    async def load(self) -> None:
        """Read users and revocations from the store."""
        await self._reload(announce=False)

    async def _reload(self, announce: bool) -> None:
        self._version = await self.store.call(self.store.data_version)
        users = await self.store.call(self.store.users)
        # A token verifies until LEEWAY past its expiry: so must its revocation hold.
        revoked = await self.store.call(self.store.revocations, time.time() - keys.LEEWAY)
        fresh = {jti: math.inf if exp is None else exp for jti, exp in revoked.items()}
        new = [(jti, exp) for jti, exp in fresh.items() if jti not in self._revoked]
        # Replaced, so a user deleted elsewhere is gone here too; one added here while this
        # ran is looked up again on its next use (``check``).
        self._users = {u.name.casefold(): _public(u) for u in users}
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
        database; forget revocations of tokens that can no longer verify anyway."""
        await self._save_unsaved()
        await self.sessions.flush()
        if await self.store.call(self.store.data_version) != self._version:
            await self._reload(announce=True)
        since = time.time() - keys.LEEWAY
        self._revoked = {jti: exp for jti, exp in self._revoked.items() if exp >= since}

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
        self.revoked(jti, expires_at)

    def revoked(self, jti: str, expires_at: float) -> None:
        """A revocation already saved in the store: refused here at once, and announced."""
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

    async def register(
        self, name: str, password: str, invite: str | None = None, address: str | None = None
    ) -> UserRecord:
        """A new user, as the ``registration`` setting allows; ``address`` is the client's,
        for the sign-in throttle."""
        self._signer.key()
        if self._registration == "closed":
            raise Refused(
                "registration is closed on this gateway: ask its operator for an account",
                "registration_closed",
                status_hint=403,
            )
        if self._registration == "invite" and not invite:
            raise Refused(
                "registration on this gateway needs an invite code from its operator",
                "invite_required",
                "invite",
                status_hint=403,
            )
        self._throttle.check(address, name)
        _check_username(name)
        hashed = await self.hash_new_password(password)
        code = invite_hash(invite) if self._registration == "invite" and invite else None
        user = await self.store.call(
            add_user, self.store, name, hashed, self.plans.default, time.time(), invite=code
        )
        self.remember(user)
        logger.info("registered user %s", user.name)
        return user

    async def login(self, name: str, password: str, address: str | None = None) -> UserRecord:
        self._signer.key()
        user = await self.check_password(name, password, address)
        if user is None:
            raise Refused("wrong username or password", "invalid_credentials", status_hint=401)
        if user.disabled:
            raise Refused(f"user {user.name!r} is disabled", "account_disabled", status_hint=403)
        return user

    async def check_password(
        self, name: str, password: str, address: str | None = None
    ) -> UserRecord | None:
        """The user if ``password`` is theirs, else None; each try counts against the
        sign-in throttle, like a login."""
        self._throttle.check(address, name)
        user = await self.store.call(self.store.user, name)
        stored = user.password if user else None
        ok = await self._hashing.run(keys.verify_password, password, stored, self._cost)
        if user is None or not ok:
            return None
        if keys.needs_rehash(stored, self._cost):
            await self._rehash(user.name, password)
        return user

    async def hash_new_password(self, password: str) -> str:
        """``password`` checked for strength and hashed, off the event loop."""
        _check_strength(password)  # before taking a hashing thread
        return await self._hashing.run(_hash_new_password, password, self._cost)

    def remember(self, user: UserRecord) -> UserRecord:
        """Take a change to ``user`` made here into the caches at once; the cached record."""
        cached = self._users[user.name.casefold()] = _public(user)
        return cached

    def forget(self, name: str) -> None:
        self._users.pop(name.casefold(), None)

    async def _rehash(self, name: str, password: str) -> None:
        """Store ``password`` again at the current cost: hashes made before a raise of
        the cost are upgraded as their users log in. Skipped (till next time) when busy."""
        try:
            hashed = await self._hashing.run(keys.hash_password, password, self._cost)
        except (Refused, keys.WeakPassword):
            return
        await self.store.call(self.store.set_password, name, hashed)

    async def session(
        self, user: str, agent: str = "", address: str | None = None
    ) -> tuple[str, keys.Claims]:
        """A session token for ``user``, with its claims, recorded as a login from ``agent``
        (the client's User-Agent) at ``address``."""
        token, claims = self._signer.issue(user, self._session_ttl, "session")
        await self.sessions.start(claims, agent, address)
        return token, claims

    async def invite(self, ttl: float) -> tuple[str, float]:
        """A new single-use invite code and when it expires."""
        return await self.store.call(new_invite, self.store, ttl, time.time())

    def use_signer(self, signer: Ed25519PrivateKey | None) -> None:
        """Sign new tokens with ``signer`` from now on (the token key was rotated)."""
        self._signer.use(signer)


def add_user(
    store: Store,
    name: str,
    password_hash: str | None,
    plan: str,
    now: float,
    *,
    admin: bool = False,
    invite: str | None = None,
) -> UserRecord:
    """Add a user whose password is already hashed, refusing as the rules say."""
    _check_username(name)
    try:
        return store.add_user(name, password_hash, plan, now, admin=admin, invite=invite)
    except UserExists as exc:
        raise Refused(str(exc), "username_taken", status_hint=409) from exc
    except InviteInvalid as exc:
        raise Refused(str(exc), "invite_invalid", "invite", status_hint=403) from exc


def create_user(
    store: Store,
    name: str,
    password: str | None,
    plan: str,
    now: float,
    *,
    admin: bool = False,
    cost: keys.ScryptCost = keys.OWASP,
) -> UserRecord:
    """Check and add a user; ``password`` is hashed here (None: token-only user). Blocking:
    the operator's CLI runs it as is."""
    _check_username(name)
    hashed = None if password is None else _hash_new_password(password, cost)
    return add_user(store, name, hashed, plan, now, admin=admin)


def _check_username(name: str) -> None:
    try:
        check_username(name)
    except ValueError as exc:
        raise Refused(str(exc), "invalid_username", "username") from exc


def _check_strength(password: str) -> None:
    try:
        check_strength(password)
    except keys.WeakPassword as exc:
        raise Refused(str(exc), "weak_password", "password") from exc


def _hash_new_password(password: str, cost: keys.ScryptCost) -> str:
    _check_strength(password)
    return keys.hash_password(password, cost)


def _public(user: UserRecord) -> UserRecord:
    """The record without its password hash: the caches never hold one."""
    return UserRecord(user.name, None, user.plan, user.disabled, user.created, user.admin)
