"""User access tokens: EdDSA-signed JWTs, named by the ``kid`` of the key that signed them.

Verification takes one public key or a ``KeySet``: the current key plus those kept after a
rotation, so tokens signed before it stay valid until they expire, less those retired for
good. A token's ``aud`` names the user table it was issued for (a gateway's accounts): every
gateway holds the same signing key, so the audience is what keeps one gateway's ``alice``
from being another's. ``max_ttl`` caps how long a token may live, at issue and at verify.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from keys.files import raw_public

AUDIENCE = "bitinglip"  # tokens bound to no accounts: only verifiers built without any accept them
ISSUER = "bitinglip-operator"
ALGORITHM = "EdDSA"
LEEWAY = 5  # seconds of clock skew forgiven at expiry; revocations must outlive it


class TokenError(Exception):
    """A token that must be refused; the message says why, for the user."""


@dataclass(frozen=True)
class Claims:
    sub: str
    jti: str
    scope: str
    exp: float
    iat: float = 0.0  # when it was issued


def fingerprint(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """A short name for a token key, carried as ``kid`` in the tokens it signs."""
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


@dataclass(frozen=True)
class KeySet:
    """Token verification keys by ``kid``; ``current`` checks tokens that name no key."""

    keys: Mapping[str, Ed25519PublicKey]
    current: str

    @classmethod
    def of(
        cls, current: Ed25519PublicKey, *previous: Ed25519PublicKey, refused: Iterable[str] = ()
    ) -> KeySet:
        """``current`` and the ``previous`` keys, less those whose kid is in ``refused``."""
        found = {fingerprint(k): k for k in previous} | {fingerprint(current): current}
        gone = set(refused) - {fingerprint(current)}
        return cls({kid: k for kid, k in found.items() if kid not in gone}, fingerprint(current))

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
    *,
    audience: str = AUDIENCE,
    max_ttl: float | None = None,
) -> str:
    """A token for ``user``; ``ValueError`` if ``ttl`` is over ``max_ttl``."""
    if max_ttl is not None and ttl > max_ttl:
        raise ValueError(
            f"a token may live at most {describe_ttl(max_ttl)} here, not {describe_ttl(ttl)}"
        )
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user,
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl),
        "aud": audience,
        "iss": ISSUER,
        "jti": jti or uuid.uuid4().hex,
        "scope": scope,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": fingerprint(key)})


def verify(
    token: str,
    key: Ed25519PublicKey | KeySet,
    *,
    audience: str = AUDIENCE,
    max_ttl: float | None = None,
) -> Claims:
    """Verify signature, algorithm, expiry, audience, issuer and (with ``max_ttl``) that
    the token was not made to live longer than that."""
    if isinstance(key, KeySet):
        key = key.pick(token)
    try:
        body = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],  # a fixed list: no "none", no HS256 with the public key
            audience=audience,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "aud", "iss", "jti"], "strict_aud": True},
            leeway=LEEWAY,
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token has expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenError(
            "token belongs to another gateway's accounts (wrong audience):"
            " sign in to this gateway for a token it accepts"
        ) from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc}") from exc
    if max_ttl is not None and _number(body["exp"]) - _number(body["iat"]) > max_ttl:
        raise TokenError(f"token lives longer than this gateway allows ({describe_ttl(max_ttl)})")
    return Claims(
        str(body["sub"]),
        str(body["jti"]),
        str(body.get("scope", "")),
        float(body["exp"]),
        _number(body["iat"]),
    )


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError("invalid token: exp and iat must be numbers")
    return float(value)


def describe_ttl(seconds: float) -> str:
    """``7d``, ``12h``, ``30m`` or ``45s``: the largest unit that divides ``seconds``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


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
