"""User passwords: salted scrypt hashes, never kept or logged in clear.

A hash is stored as ``scrypt$<n>$<r>$<p>$<salt>$<digest>`` (base64), so its cost parameters
travel with it: raising the cost leaves existing hashes verifying at the cost they were
made with, and ``needs_rehash`` says which to upgrade at the next login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

MIN_LENGTH = 8
MAX_LENGTH = 1024  # scrypt reads the whole password: bound the work a request can ask for
_SALT_BYTES = 16
_DIGEST_BYTES = 32
# What a stored hash may ask for: a corrupt or planted row must not take the host's memory.
_MAX_MEMORY = (1 << 30) + (1 << 16)  # N=2**20 at r=8
_MAX_P = 16


class WeakPassword(ValueError):
    """A password that may not be set; the message says why, for the user."""


@dataclass(frozen=True)
class ScryptCost:
    """scrypt's parameters. The default is OWASP's guidance (N=2**17, r=8, p=1): about
    128 MiB and a few hundred milliseconds per hash."""

    n: int = 2**17
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if self.n < 2 or self.n & (self.n - 1):
            raise ValueError(f"scrypt n must be a power of two, not {self.n}")
        if self.r < 1 or not 1 <= self.p <= _MAX_P:
            raise ValueError(f"scrypt r must be at least 1 and p 1 to {_MAX_P}")
        if self.memory > _MAX_MEMORY:
            raise ValueError(f"scrypt n={self.n}, r={self.r} needs over 1 GiB per hash")

    @property
    def memory(self) -> int:
        """Bytes one hash needs (scrypt's 128·r·N, plus its other buffers)."""
        return 128 * self.r * (self.n + self.p + 2)


OWASP = ScryptCost()


def check_strength(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"password must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"password must be at most {MAX_LENGTH} characters")


def hash_password(password: str, cost: ScryptCost = OWASP) -> str:
    """A new salted hash of ``password``; slow on purpose, so call it off-loop."""
    check_strength(password)
    salt = os.urandom(_SALT_BYTES)
    digest = _scrypt(password, salt, cost)
    fields = ["scrypt", str(cost.n), str(cost.r), str(cost.p), _b64(salt), _b64(digest)]
    return "$".join(fields)


def verify_password(password: str, encoded: str | None, cost: ScryptCost = OWASP) -> bool:
    """Whether ``password`` matches ``encoded``; ``None`` (no password set) matches nothing.

    Without a usable hash it still does one hash at ``cost`` (the cost new hashes get), so
    timing does not tell whether a user exists.
    """
    try:
        scheme, n, r, p, salt, digest = (encoded or "").split("$")
        if scheme != "scrypt":
            raise ValueError(scheme)
        params = ScryptCost(int(n), int(r), int(p))
        expected = base64.b64decode(digest, validate=True)
        salt_bytes = base64.b64decode(salt, validate=True)
    except ValueError:
        _scrypt(password[:MAX_LENGTH], b"\0" * _SALT_BYTES, cost)
        return False
    if len(password) > MAX_LENGTH:
        return False
    return hmac.compare_digest(_scrypt(password, salt_bytes, params), expected)


def needs_rehash(encoded: str | None, cost: ScryptCost = OWASP) -> bool:
    """Whether ``encoded`` was made at a lower cost than ``cost`` (or is no hash at all)."""
    try:
        scheme, n, r, p, *_ = (encoded or "").split("$")
        made = int(n), int(r), int(p)
    except ValueError:
        return True
    wanted = cost.n, cost.r, cost.p
    return scheme != "scrypt" or any(a < b for a, b in zip(made, wanted, strict=True))


def _scrypt(password: str, salt: bytes, cost: ScryptCost) -> bytes:
    return hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=cost.n,
        r=cost.r,
        p=cost.p,
        maxmem=cost.memory + (1 << 20),
        dklen=_DIGEST_BYTES,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
