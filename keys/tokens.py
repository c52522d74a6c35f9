"""User access tokens: EdDSA-signed JWTs, named by the ``kid`` of the key that signed them.

Verification takes one public key or a ``KeySet``: the current key plus those kept after a
rotation, so tokens signed before it stay valid until they expire.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from keys.files import raw_public

AUDIENCE = "bitinglip"
ISSUER = "bitinglip-operator"
ALGORITHM = "EdDSA"


class TokenError(Exception):
    """A token that must be refused; the message says why, for the user."""


@dataclass(frozen=True)
class Claims:
    sub: str
    jti: str
    scope: str
    exp: float


def fingerprint(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """A short name for a token key, carried as ``kid`` in the tokens it signs."""
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


@dataclass(frozen=True)
class KeySet:
    """Token verification keys by ``kid``; ``current`` checks tokens that name no key."""

    keys: Mapping[str, Ed25519PublicKey]
    current: str

    @classmethod
    def of(cls, current: Ed25519PublicKey, *retired: Ed25519PublicKey) -> KeySet:
        found = {fingerprint(k): k for k in retired} | {fingerprint(current): current}
        return cls(found, fingerprint(current))

    def pick(self, token: str) -> Ed25519PublicKey:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"invalid token: {exc}") from exc
        if kid is None:
            return self.keys[self.current]
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenError("invalid token: signed by an unknown key")
        return key


def issue(
    key: Ed25519PrivateKey,
    user: str,
    ttl: float,
    scope: str = "inference",
    jti: str | None = None,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user,
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl),
        "aud": AUDIENCE,
        "iss": ISSUER,
        "jti": jti or uuid.uuid4().hex,
        "scope": scope,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": fingerprint(key)})


def verify(token: str, key: Ed25519PublicKey | KeySet) -> Claims:
    """Verify signature, algorithm, expiry, audience and issuer."""
    if isinstance(key, KeySet):
        key = key.pick(token)
    try:
        body = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],  # a fixed list: no "none", no HS256 with the public key
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "aud", "iss", "jti"]},
            leeway=5,
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token has expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenError("token is for another audience") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc}") from exc
    return Claims(
        str(body["sub"]), str(body["jti"]), str(body.get("scope", "")), float(body["exp"])
    )


def parse_ttl(text: str) -> float:
    """Parse ``90``, ``30s``, ``15m``, ``1h``, ``7d`` into seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        unit = units.get(text[-1:], 0)
        value = float(text[:-1]) * unit if unit else float(text)
    except ValueError as exc:
        raise ValueError(f"not a duration: {text!r} (try 30m, 1h or 7d)") from exc
    if not math.isfinite(value) or value <= 0:
        raise ValueError("a duration must be a positive number")
    return value
