"""User passwords: salted scrypt hashes, never kept or logged in clear.

A hash is stored as ``scrypt$<n>$<r>$<p>$<salt>$<digest>`` (base64), so its cost parameters
travel with it and can be raised later without invalidating existing hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

MIN_LENGTH = 8
MAX_LENGTH = 1024  # scrypt reads the whole password: bound the work a request can ask for
_N, _R, _P = 2**14, 8, 1
_SALT_BYTES = 16
_DIGEST_BYTES = 32
_MAXMEM = 64 * 1024 * 1024


class WeakPassword(ValueError):
    """A password that may not be set; the message says why, for the user."""


def check_strength(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"password must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"password must be at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    """A new salted hash of ``password``; slow on purpose (tens of ms), so call it off-loop."""
    check_strength(password)
    salt = os.urandom(_SALT_BYTES)
    digest = _scrypt(password, salt, _N, _R, _P)
    return "$".join(["scrypt", str(_N), str(_R), str(_P), _b64(salt), _b64(digest)])


def verify_password(password: str, encoded: str | None) -> bool:
    """Whether ``password`` matches ``encoded``; ``None`` (no password set) matches nothing.

    Does the same work whether or not there is a hash, so timing does not tell whether a
    user exists.
    """
    try:
        scheme, n, r, p, salt, digest = (encoded or "").split("$")
        if scheme != "scrypt":
            raise ValueError(scheme)
        params = int(n), int(r), int(p)
        expected = base64.b64decode(digest, validate=True)
        salt_bytes = base64.b64decode(salt, validate=True)
    except ValueError:
        _scrypt(password[:MAX_LENGTH], b"\0" * _SALT_BYTES, _N, _R, _P)
        return False
    if len(password) > MAX_LENGTH:
        return False
    return hmac.compare_digest(_scrypt(password, salt_bytes, *params), expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=_DIGEST_BYTES
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
