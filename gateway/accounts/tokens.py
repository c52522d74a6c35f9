"""Tokens for a gateway's users: signed with the swarm's token key and bound to the
database they were issued for (their audience names it), so no other gateway's users pass.

``Signer`` issues what the gateway hands out (logins' sessions, API keys);
``operator_token`` is what ``bitinglip tokens issue`` prints from the operator's shell.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import keys
from gateway.accounts.database import Store
from gateway.accounts.errors import Refused

DAY = 86400.0
MAX_TOKEN_TTL = 365 * DAY  # the longest any token may live, unless configured otherwise


def audience_of(store: Store) -> str:
    """The audience of tokens for the users of ``store``: gateways sharing the database
    file accept each other's tokens, and no other gateway does."""
    return f"bitinglip:accounts:{store.accounts_id()}"


class Signer:
    """The gateway's copy of the token key (None: it holds none, and issues nothing)."""

    def __init__(self, key: Ed25519PrivateKey | None, audience: str) -> None:
        self.audience = audience
        self._key = key

    def use(self, key: Ed25519PrivateKey | None) -> None:
        """Sign with ``key`` from now on (the token key was rotated)."""
        self._key = key

    def key(self) -> Ed25519PrivateKey:
        """The signing key; a 503 ``Refused`` when this gateway holds none."""
        if self._key is None:
            message = "this gateway holds no token signing key (jwt.key)"
            raise Refused(message, "signing_unavailable", status_hint=503)
        return self._key

    def issue(
        self, user: str, ttl: float, scope: str, jti: str | None = None
    ) -> tuple[str, keys.Claims]:
        """A token for ``user`` and its claims."""
        key = self.key()
        token = keys.issue(key, user, ttl, scope, jti, audience=self.audience)
        return token, keys.verify(token, key.public_key(), audience=self.audience)


def operator_token(
    store: Store,
    signer: Ed25519PrivateKey,
    user: str,
    ttl: float,
    scope: str = "inference",
    *,
    max_ttl: float = MAX_TOKEN_TTL,
) -> str:
    """A token the operator issues from the shell, bound to ``store``'s users. The user must
    be in the table (so nobody can register the name later and be taken for them) and
    enabled; an admin token needs a user marked admin. Blocking."""
    found = store.user(user)
    if found is None:
        raise Refused(
            f"no user {user!r} in {store.path}: add one with `bitinglip users add {user}`",
            "no_account",
            status_hint=404,
        )
    if found.disabled:
        raise Refused(f"user {found.name!r} is disabled", "account_disabled", status_hint=403)
    if scope == "admin" and not found.admin:
        raise Refused(
            f"{found.name} is not an admin here: run `bitinglip users admin {found.name}` first",
            "not_admin",
            status_hint=403,
        )
    try:
        return keys.issue(
            signer, found.name, ttl, scope, audience=audience_of(store), max_ttl=max_ttl
        )
    except ValueError as exc:
        raise Refused(str(exc), "ttl_too_long", "ttl") from exc
