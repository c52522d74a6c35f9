"""The swarm's keys as laid out in a data directory.

An operator's directory holds ``operator.key`` (admits peers) and ``jwt.key`` (signs user
tokens). A peer's directory holds its own ``identity.key``, its ``membership.cert``, and
the public halves it verifies with: ``operator.pub`` and ``jwt.pub``. Gateways issue tokens
to their users, so they also hold a copy of ``jwt.key``. After a rotation the previous token
keys stay as ``jwt.<kid>.pub``: tokens they signed verify until they expire.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from keys.files import (
    load_or_create_key,
    load_public_pem,
    public_pem,
    raw_public,
    write_private,
    write_public,
)
from keys.tokens import KeySet, fingerprint
from protocols import Certificate, issue_certificate, peer_id_of

IDENTITY = "identity.key"
OPERATOR_KEY = "operator.key"
OPERATOR_PUB = "operator.pub"
JWT_KEY = "jwt.key"
JWT_PUB = "jwt.pub"
JWT_RETIRED = "jwt.*.pub"  # jwt.<kid>.pub: token keys kept after a rotation
CERTIFICATE = "membership.cert"
CERT_LIFETIME = 365 * 24 * 3600.0


class NotAdmitted(Exception):
    """This peer holds no membership certificate and no operator key to issue one."""


def init_operator(data_dir: Path) -> None:
    """Create the operator and JWT keys (idempotent) with their public halves."""
    for private, public in ((OPERATOR_KEY, OPERATOR_PUB), (JWT_KEY, JWT_PUB)):
        key = load_or_create_key(data_dir / private)
        write_public(data_dir / public, public_pem(key))


def identity(data_dir: Path) -> Ed25519PrivateKey:
    """This peer's Ed25519 identity, created once: its peer id survives restarts."""
    return load_or_create_key(data_dir / IDENTITY)


def peer_id(data_dir: Path) -> str:
    return peer_id_of(raw_public(identity(data_dir)))


def admit(operator_dir: Path, peer: str, role: str, lifetime: float = CERT_LIFETIME) -> bytes:
    """Issue a membership certificate for ``peer`` with the operator's key."""
    operator = load_or_create_key(operator_dir / OPERATOR_KEY)
    now = time.time()
    return issue_certificate(operator, Certificate(peer, role, now, now + lifetime))


def provision(peer_dir: Path, operator_dir: Path, role: str) -> str:
    """Give a peer directory an identity, a certificate and the public keys; return its id."""
    init_operator(operator_dir)
    peer = peer_id(peer_dir)
    write_public(peer_dir / CERTIFICATE, admit(operator_dir, peer, role))
    if peer_dir.resolve() == operator_dir.resolve():
        return peer
    retired = [p.name for p in operator_dir.glob(JWT_RETIRED)]
    for name in (OPERATOR_PUB, JWT_PUB, *retired):
        write_public(peer_dir / name, (operator_dir / name).read_bytes())
    if role == "gateway":  # gateways issue tokens to their users
        write_private(peer_dir / JWT_KEY, (operator_dir / JWT_KEY).read_bytes())
    return peer


def certificate(data_dir: Path, role: str) -> bytes:
    """This peer's certificate; a peer holding the operator key admits itself."""
    path = data_dir / CERTIFICATE
    if path.exists():
        return path.read_bytes()
    if (data_dir / OPERATOR_KEY).exists():
        provision(data_dir, data_dir, role)
        return path.read_bytes()
    raise NotAdmitted(
        f"no {CERTIFICATE} in {data_dir}: on the operator's machine run "
        f"`bitinglip keys admit {peer_id(data_dir)} --role {role}` and copy the "
        f"certificate and {OPERATOR_PUB} here"
    )


def operator_public(data_dir: Path) -> bytes:
    path = data_dir / OPERATOR_PUB
    if not path.exists():
        raise NotAdmitted(f"no {OPERATOR_PUB} in {data_dir}")
    return raw_public(load_public_pem(path))


@dataclass(frozen=True)
class JwtKeys:
    private: Ed25519PrivateKey | None
    public: Ed25519PublicKey


def jwt_keys(data_dir: Path) -> JwtKeys:
    """The token keys: gateways need only the public half."""
    private = load_or_create_key(data_dir / JWT_KEY) if (data_dir / JWT_KEY).exists() else None
    if private is not None:
        return JwtKeys(private, private.public_key())
    path = data_dir / JWT_PUB
    if not path.exists():
        raise NotAdmitted(f"no {JWT_PUB} in {data_dir}: run `bitinglip keys init`")
    return JwtKeys(None, load_public_pem(path))


def write_certificate(data_dir: Path, blob: bytes) -> None:
    write_private(data_dir / CERTIFICATE, blob)


def jwt_keyset(data_dir: Path) -> KeySet:
    """Every key a token may be verified with here: the current one and the retired ones."""
    retired = [load_public_pem(path) for path in sorted(data_dir.glob(JWT_RETIRED))]
    return KeySet.of(jwt_keys(data_dir).public, *retired)


def rotate_jwt(data_dir: Path) -> str:
    """Sign new tokens with a fresh key, keeping the old public half; return the new kid."""
    old = jwt_keys(data_dir)
    if old.private is None:
        raise NotAdmitted(f"no {JWT_KEY} in {data_dir}: rotate on the operator's machine")
    write_public(data_dir / f"jwt.{fingerprint(old.public)}.pub", public_pem(old.private))
    new = Ed25519PrivateKey.generate()
    pem = new.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(data_dir / JWT_KEY, pem)
    write_public(data_dir / JWT_PUB, public_pem(new))
    return fingerprint(new)
