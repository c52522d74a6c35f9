"""What users change about their own account: the password, and the account itself.

Both ask for the current password (counted by the sign-in throttle, like a login), so a
token left in an unlocked browser is not enough to take an account over or erase it.
"""

from __future__ import annotations

import logging
import secrets
import time

from gateway.accounts.errors import Refused
from gateway.accounts.management import no_user
from gateway.accounts.users import Accounts

logger = logging.getLogger(__name__)

# Usage of a deleted account is kept under a name no user can take ('~' starts no username),
# one per account, so the operator's totals and per-user counts stay right.
DELETED_PREFIX = "~deleted-"


async def _confirm(
    accounts: Accounts, user: str, password: str, address: str | None, param: str
) -> str:
    """The user's name as stored, once ``password`` (the body's field ``param``) is theirs;
    403 otherwise."""
    found = await accounts.check_password(user, password, address)
    if found is None:
        raise Refused("the current password is wrong", "wrong_password", param, status_hint=403)
    return found.name


async def change_password(
    accounts: Accounts,
    user: str,
    current: str,
    new: str,
    keep: str,
    address: str | None = None,
) -> list[str]:
    """Set a new password and end every session of ``user`` but ``keep`` (the one asking);
    the ids of the sessions ended."""
    name = await _confirm(accounts, user, current, address, "current_password")
    hashed = await accounts.hash_new_password(new)
    await accounts.store.call(accounts.store.set_password, name, hashed)
    ended = await accounts.sessions.end_all(name, keep)
    logger.info("%s changed their password; %d other sessions ended", name, len(ended))
    return ended


async def delete_account(
    accounts: Accounts, user: str, password: str, address: str | None = None
) -> str:
    """Delete ``user``: keys revoked, sessions ended, usage kept under an anonymous name
    (returned). Every token the account made is refused at once."""
    name = await _confirm(accounts, user, password, address, "password")
    alias = DELETED_PREFIX + secrets.token_hex(4)
    revoked = await accounts.store.call(accounts.store.delete_user, name, alias, time.time())
    if revoked is None:
        raise no_user(name)
    for jti, expires_at in revoked:
        accounts.revoked(jti, expires_at)
    accounts.forget(name)
    logger.info("deleted user %s (usage kept as %s)", name, alias)
    return alias
