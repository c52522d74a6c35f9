"""Who is calling: bearer JWTs verified against the operator's token keys.

A valid signature is not the whole story: the token must be bound to this gateway's
accounts (its audience) and live no longer than they allow, and guards (the accounts, with
their revoked token ids, disabled users and users no longer in the table) may still refuse
it. Scopes: ``inference`` (API keys), ``session`` (a login; manages the user's keys and
account, and the admin routes for an admin), ``admin`` (operator-issued). Admin routes
serve only a user this gateway's table marks admin: anyone holding the signing key can
write the scope, only this gateway's operator can mark the user.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import Depends, Request

import keys
from gateway.api.errors import ApiError

VERIFIED_CACHE = 4096


class Guard(Protocol):
    async def check(self, claims: keys.Claims) -> None:
        """Raise ``keys.TokenError`` to refuse a token whose signature is good."""
        ...


class AdminTable(Protocol):
    async def is_admin(self, user: str) -> bool:
        """Whether this gateway's users table marks ``user`` an admin."""
        ...


class Authenticator:
    def __init__(
        self,
        public_key: Ed25519PublicKey | keys.KeySet,
        guards: Sequence[Guard] = (),
        *,
        audience: str = keys.AUDIENCE,
        max_ttl: float | None = None,
    ) -> None:
        self._public_key = public_key
        self._guards = list(guards)
        self._audience = audience
        self._max_ttl = max_ttl
        # Signature checks are the costly part (~0.2 ms): remember tokens already verified
        # until they expire. Guards (revocation, disabled users) still run every time.
        self._verified: OrderedDict[str, keys.Claims] = OrderedDict()

    def use_keys(self, public_key: Ed25519PublicKey | keys.KeySet) -> None:
        """Verify with these keys from now on; tokens verified before are checked again,
        so one signed by a key retired for good is refused at its next use."""
        self._public_key = public_key
        self._verified.clear()

    async def verify(self, token: str) -> keys.Claims:
        """The token's claims, or ``keys.TokenError`` saying why it is refused."""
        claims = self._verified.get(token)
        if claims is None or claims.exp <= time.time():
            self._verified.pop(token, None)
            claims = keys.verify(
                token, self._public_key, audience=self._audience, max_ttl=self._max_ttl
            )
            self._verified[token] = claims
            if len(self._verified) > VERIFIED_CACHE:
                self._verified.popitem(last=False)
        return await self.check(claims)

    async def check(self, claims: keys.Claims) -> keys.Claims:
        """``claims`` if the guards still let them in (a user disabled or a key revoked
        since they were verified is refused), else ``keys.TokenError``."""
        for guard in self._guards:
            await guard.check(claims)
        return claims


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401, "missing bearer token: send 'Authorization: Bearer <token>'", "invalid_api_key"
        )
    return token.strip()


# A call the gateway makes on a user's behalf (a job, ``gateway.api.job_runner``) carries
# their claims here, in the ASGI scope: only code in this process can put them there.
ON_BEHALF = "bitinglip.on_behalf_of"


# async: FastAPI would run a plain function in a worker thread, a hop per request.
async def require_user(request: Request) -> keys.Claims:
    auth: Authenticator = request.app.state.services.auth
    on_behalf = request.scope.get(ON_BEHALF)
    try:
        if isinstance(on_behalf, keys.Claims):
            return await auth.check(on_behalf)
        return await auth.verify(bearer(request))
    except keys.TokenError as exc:
        raise ApiError(401, str(exc), "invalid_api_key") from exc


def require_scope(scope: str) -> Callable[[Request], Awaitable[keys.Claims]]:
    async def check(request: Request) -> keys.Claims:
        claims = await require_user(request)
        if claims.scope != scope:
            raise ApiError(403, f"this needs a {scope} token", "insufficient_scope")
        return claims

    return check


async def require_admin(request: Request) -> keys.Claims:
    """An admin token, or the session of an admin who logged in (the web app's operator
    views): either way the user must be an enabled admin in this gateway's table."""
    claims = await require_user(request)
    if claims.scope not in ("admin", "session"):
        raise ApiError(403, "this needs an admin token", "insufficient_scope")
    table: AdminTable | None = request.app.state.services.accounts
    if table is None or not await table.is_admin(claims.sub):
        raise ApiError(403, f"{claims.sub!r} is not an admin of this gateway", "insufficient_scope")
    return claims


User = Annotated[keys.Claims, Depends(require_user)]
Session = Annotated[keys.Claims, Depends(require_scope("session"))]
Admin = Annotated[keys.Claims, Depends(require_admin)]
