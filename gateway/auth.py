"""Who is calling: bearer JWTs verified against the operator's token keys."""

from __future__ import annotations

from typing import Annotated

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import Depends, Request

import keys
from gateway.errors import ApiError


class Authenticator:
    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self._public_key = public_key

    def verify(self, token: str) -> keys.Claims:
        """The token's claims, or ``keys.TokenError`` saying why it is refused."""
        return keys.verify(token, self._public_key)


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401, "missing bearer token: send 'Authorization: Bearer <token>'", "invalid_api_key"
        )
    return token.strip()


def require_user(request: Request) -> keys.Claims:
    auth: Authenticator = request.app.state.services.auth
    try:
        return auth.verify(bearer(request))
    except keys.TokenError as exc:
        raise ApiError(401, str(exc), "invalid_api_key") from exc


User = Annotated[keys.Claims, Depends(require_user)]
