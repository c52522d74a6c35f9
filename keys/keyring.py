"""The swarm's keys as laid out in a data directory.

An operator's directory holds ``operator.key`` (admits peers) and ``jwt.key`` (signs user
tokens). A peer's directory holds its own ``identity.key``, its ``membership.cert``, and
the public halves it verifies with: ``operator.pub`` and ``jwt.pub``. Gateways issue tokens
to their users, so they also hold a copy of ``jwt.key``. After a rotation the previous token
keys stay as ``jwt.<kid>.pub``: tokens they signed verify until they expire, unless the key
is retired for good (``retire_jwt``): its kid is then listed in ``jwt.retired`` and refused
even where a copy of its public half is left.

Certificates live a day (``CERT_LIFETIME``), so a stolen identity key stops working within
one. Where the operator key is at hand they are renewed past half their life: by a peer
holding it in its own directory, and by ``bitinglip up`` for the peers it started. Elsewhere
the operator runs ``bitinglip keys admit`` again and copies the certificate over; a running
peer picks it up (``Membership.refresh``). ``revoked.list`` is the operator's signed list of
revoked peers (``bitinglip keys revoke``); each peer keeps the newest one it has heard of.
"""

from __future__ import annotations

import logging
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
from protocols import (
    Certificate,
    RemoteProtocolError,
    Revocations,
    issue_certificate,
    issue_revocations,
    peer_id_of,
    read_certificate,
    verify_certificate,
    verify_revocations,
)

logger = logging.getLogger(__name__)

IDENTITY = "identity.key"
OPERATOR_KEY = "operator.key"
OPERATOR_PUB = "operator.pub"
JWT_KEY = "jwt.key"
JWT_PUB = "jwt.pub"
JWT_PREVIOUS = "jwt.*.pub"  # jwt.<kid>.pub: token keys kept after a rotation
JWT_REFUSED = "jwt.retired"  # kids retired for good, one a line
CERTIFICATE = "membership.cert"
REVOKED = "revoked.list"
CERT_LIFETIME = 24 * 3600.0


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
    previous = [p.name for p in operator_dir.glob(JWT_PREVIOUS)]
    refused = [JWT_REFUSED] if (operator_dir / JWT_REFUSED).exists() else []
    revoked = [REVOKED] if (operator_dir / REVOKED).exists() else []
    for name in (OPERATOR_PUB, JWT_PUB, *previous, *refused, *revoked):
        write_public(peer_dir / name, (operator_dir / name).read_bytes())
    if role == "gateway":  # gateways issue tokens to their users
        write_private(peer_dir / JWT_KEY, (operator_dir / JWT_KEY).read_bytes())
    return peer


def renewal_due(peer_dir: Path, role: str, now: float) -> bool:
    """Whether ``peer_dir`` needs a new certificate for ``role``: it has none that verifies,
    or it is past half its life. One admitting another role or peer is left alone."""
    try:
        cert = read_certificate((peer_dir / CERTIFICATE).read_bytes(), operator_public(peer_dir))
    except (OSError, NotAdmitted, RemoteProtocolError):
        return True
    if cert.role != role or cert.peer_id != peer_id(peer_dir):
        return False
    return now >= (cert.issued_at + cert.expires_at) / 2


def ensure_admitted(peer_dir: Path, operator_dir: Path, role: str) -> str:
    """``provision`` ``peer_dir`` unless it holds a certificate for ``role`` with more than
    half its life left; return its peer id."""
    if renewal_due(peer_dir, role, time.time()):
        return provision(peer_dir, operator_dir, role)
    return peer_id(peer_dir)


def certificate(data_dir: Path, role: str) -> bytes:
    """This peer's certificate; a peer holding the operator key admits itself, and renews
    its certificate past half its life."""
    path = data_dir / CERTIFICATE
    if (data_dir / OPERATOR_KEY).exists() and renewal_due(data_dir, role, time.time()):
        provision(data_dir, data_dir, role)
    if path.exists():
        return path.read_bytes()
    raise NotAdmitted(
        f"no {CERTIFICATE} in {data_dir}: on the operator's machine run "
        f"`bitinglip keys admit {peer_id(data_dir)} --role {role}` and copy the "
        f"certificate and {OPERATOR_PUB} here"
    )


class Membership:
    """This peer's own certificate, as it stands now.

    ``refresh`` picks up a renewed one: issued here by a peer holding the operator key, or
    written into the data directory by ``bitinglip up`` or by hand. A fixed certificate
    (no ``data_dir``) never changes.
    """

    def __init__(self, certificate: bytes, data_dir: Path | None = None, role: str = "") -> None:
        self.certificate = certificate
        self._data_dir = data_dir
        self._role = role

    @classmethod
    def load(cls, data_dir: Path, role: str) -> Membership:
        return cls(certificate(data_dir, role), data_dir, role)

    def refresh(self) -> bool:
        """Take up a renewed certificate, if there is one; whether it changed."""
        if self._data_dir is None:
            return False
        try:
            blob = certificate(self._data_dir, self._role)
            if blob == self.certificate:
                return False
            cert = verify_certificate(blob, operator_public(self._data_dir), time.time())
        except (OSError, NotAdmitted, RemoteProtocolError) as exc:
            logger.warning("cannot renew the membership certificate: %s", exc)
            return False
        if cert.role != self._role or cert.peer_id != peer_id(self._data_dir):
            logger.warning("%s admits another peer or role: keeping the old one", CERTIFICATE)
            return False
        self.certificate = blob
        return True


def revoke(operator_dir: Path, peer: str) -> bytes:
    """Add ``peer`` to the operator's signed revocation list; return the new list."""
    if not (operator_dir / OPERATOR_KEY).exists():
        raise NotAdmitted(f"no {OPERATOR_KEY} in {operator_dir}: revoke on the operator's machine")
    operator = load_or_create_key(operator_dir / OPERATOR_KEY)
    current = revocations(operator_dir, raw_public(operator)) or Revocations()
    blob = issue_revocations(operator, current.adding(peer, time.time()))
    write_public(operator_dir / REVOKED, blob)
    return blob


def revocations(data_dir: Path, operator_public: bytes) -> Revocations | None:
    """The revocation list kept in ``data_dir``, if there is one that verifies."""
    try:
        return verify_revocations((data_dir / REVOKED).read_bytes(), operator_public)
    except OSError:
        return None
    except RemoteProtocolError as exc:
        logger.warning("ignoring %s: %s", data_dir / REVOKED, exc)
        return None


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
    """Every key a token may be verified with here: the current one and the previous ones,
    less those retired for good."""
    previous = [load_public_pem(path) for path in sorted(data_dir.glob(JWT_PREVIOUS))]
    return KeySet.of(jwt_keys(data_dir).public, *previous, refused=retired_jwt(data_dir))


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


def retired_jwt(data_dir: Path) -> set[str]:
    """The kids retired for good in ``data_dir``."""
    path = data_dir / JWT_REFUSED
    return set(path.read_text().split()) if path.exists() else set()


def jwt_files(data_dir: Path) -> tuple[tuple[str, int], ...]:
    """The token key files here with their modification times: changes when keys do."""
    paths = [data_dir / JWT_KEY, data_dir / JWT_PUB, data_dir / JWT_REFUSED]
    paths += sorted(data_dir.glob(JWT_PREVIOUS))
    return tuple((p.name, p.stat().st_mtime_ns) for p in paths if p.exists())


def retire_jwt(data_dir: Path, kid: str, *, check: bool = True) -> None:
    """Refuse tokens signed by ``kid`` from now on in ``data_dir``. With ``check`` (the
    operator's directory) ``kid`` must be a previous key there: the key signing tokens
    now cannot be retired (rotate first), and a typo must not pass silently."""
    if check:
        if kid == fingerprint(jwt_keys(data_dir).public):
            raise ValueError(f"{kid} signs tokens now: run `bitinglip keys rotate-jwt` first")
        known = {path.name[len("jwt.") : -len(".pub")] for path in data_dir.glob(JWT_PREVIOUS)}
        if kid not in known | retired_jwt(data_dir):
            listed = ", ".join(sorted(known)) or "none"
            raise ValueError(f"no previous token key {kid!r} in {data_dir} (previous: {listed})")
    refused = sorted(retired_jwt(data_dir) | {kid})
    write_public(data_dir / JWT_REFUSED, "".join(f"{k}\n" for k in refused).encode())
    (data_dir / f"jwt.{kid}.pub").unlink(missing_ok=True)
