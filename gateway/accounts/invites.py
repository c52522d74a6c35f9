"""Invitations: single-use codes that let one person register where registration is
``invite``. Only a hash of each code is stored, so the database does not hand out codes;
the code is used up in the same transaction that adds the user."""

from __future__ import annotations

import hashlib
import secrets

from gateway.accounts.database import Store
from gateway.accounts.errors import Refused

DAY = 86400.0
DEFAULT_INVITE_TTL = 7 * DAY
MAX_INVITE_TTL = 30 * DAY


def invite_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def new_invite(store: Store, ttl: float, now: float) -> tuple[str, float]:
    """A new code good for ``ttl`` seconds, and when it expires. Blocking."""
    if not 0 < ttl <= MAX_INVITE_TTL:
        raise Refused("an invite may live up to 30 days", "invalid_ttl", "ttl")
    code = secrets.token_urlsafe(18)
    store.add_invite(invite_hash(code), now, now + ttl)
    return code, now + ttl
