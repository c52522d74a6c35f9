"""What an admin does to other people's accounts from the web: add users, disable them,
move them to a plan, reset a password, revoke any API key (the ``bitinglip users`` and
``bitinglip tokens`` commands do the same from the operator's shell).

Changes reach this gateway's caches at once, and other gateways on the same database
within a second (they reload when it changes).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from gateway.accounts.database import KeyRecord, UserRecord
from gateway.accounts.errors import Refused
from gateway.accounts.users import Accounts, add_user

logger = logging.getLogger(__name__)


async def users(accounts: Accounts) -> list[UserRecord]:
    """Every user, by name, without password hashes."""
    found = await accounts.store.call(accounts.store.users)
    return [replace(u, password=None) for u in found]


async def create(accounts: Accounts, name: str, password: str, plan: str | None) -> UserRecord:
    """A new user who logs in with ``password``, on ``plan`` (None: the default plan)."""
    chosen = _known_plan(accounts, plan or accounts.plans.default)
    hashed = await accounts.hash_new_password(password)
    store = accounts.store
    user = await store.call(add_user, store, name, hashed, chosen, time.time())
    accounts.remember(user)
    logger.info("admin added user %s on plan %s", user.name, chosen)
    return replace(user, password=None)


async def update(
    accounts: Accounts, name: str, by: str, *, disabled: bool | None, plan: str | None
) -> UserRecord:
    """Disable or enable ``name``, or move them to ``plan``; ``by`` is the admin asking,
    who may not disable themselves (nobody would be left to undo it from the web)."""
    store = accounts.store
    if plan is not None:
        _known_plan(accounts, plan)
    if disabled and name.casefold() == by.casefold():
        raise Refused("you cannot disable your own account", "cannot_disable_self", "disabled")
    if await store.call(store.user, name) is None:
        raise no_user(name)
    if plan is not None:
        await store.call(store.set_plan, name, plan)
    if disabled is not None:
        await store.call(store.set_disabled, name, disabled)
    user = await store.call(store.user, name)
    if user is None:  # deleted between the calls
        raise no_user(name)
    accounts.remember(user)
    logger.info("admin %s updated user %s: disabled=%s plan=%s", by, name, disabled, plan)
    return replace(user, password=None)


async def reset_password(accounts: Accounts, name: str, password: str) -> list[str]:
    """Give ``name`` a new password and end all their sessions; the ids ended."""
    store = accounts.store
    hashed = await accounts.hash_new_password(password)
    if not await store.call(store.set_password, name, hashed):
        raise no_user(name)
    ended = await accounts.sessions.end_all(name)
    logger.info("admin reset the password of %s; %d sessions ended", name, len(ended))
    return ended


async def keys(accounts: Accounts) -> list[KeyRecord]:
    """Every user's API keys, oldest first."""
    return await accounts.store.call(accounts.store.keys)


async def revoke_key(accounts: Accounts, key_id: str) -> KeyRecord:
    """Revoke anyone's API key."""
    key = await accounts.store.call(accounts.store.key, key_id)
    if key is None:
        raise Refused(f"no key {key_id!r}", "key_not_found", "id", status_hint=404)
    await accounts.revoke(key.jti, key.expires_at)
    return key


def _known_plan(accounts: Accounts, plan: str) -> str:
    if plan not in accounts.plans:
        known = ", ".join(accounts.plans.names())
        raise Refused(f"no plan {plan!r}; known: {known}", "unknown_plan", "plan")
    return plan


def no_user(name: str) -> Refused:
    return Refused(f"no user {name!r}", "user_not_found", "username", status_hint=404)
