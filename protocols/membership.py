"""Who belongs to the swarm: the certificate check, the admission exchange, revocations.

Right after Noise authenticates a connection, each side opens an ``ADMIT_PROTOCOL`` stream
and sends one ``Hello`` frame (at most ``HELLO_MAX_FRAME`` bytes) with its membership
certificate; the other side answers ``End`` or an ``Error`` saying why, and closes the
connection when it refuses. Until a peer is admitted, nothing else it opens is served.

The operator revokes peers with a signed ``Revocations`` list: published in the DHT under
``REVOKED_KEY`` and pushed to connected peers on ``REVOKED_PROTOCOL`` (one frame holding
the list, answered ``End``), each peer passing a newer list on to its own peers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from protocols.codec import pack, unpack_map
from protocols.errors import RemoteProtocolError
from protocols.records import (
    Certificate,
    open_envelope,
    sign_envelope,
    verify_certificate,
)
from protocols.validate import exact, finite, required

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ADMIT_PROTOCOL = "/bitinglip/admit/1.0.0"
REVOKED_PROTOCOL = "/bitinglip/revoked/1.0.0"
REVOKED_KEY = "/bitinglip/revoked"
# Roles that serve the DHT and may sit in a routing table; clients only ask.
SERVER_ROLES = ("node", "gateway")


@dataclass(frozen=True)
class Revocations:
    """The operator's list of peers that are no longer admitted, and when each was revoked.

    ``seq`` grows with every change: the highest seq is the current list.
    """

    seq: int = 0
    peers: dict[str, float] = field(default_factory=dict)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self.peers

    def adding(self, peer_id: str, now: float) -> Revocations:
        """This list with ``peer_id`` revoked too."""
        return Revocations(self.seq + 1, {**self.peers, peer_id: self.peers.get(peer_id, now)})


def issue_revocations(operator: Ed25519PrivateKey, revocations: Revocations) -> bytes:
    """Sign a revocation list with the operator key."""
    return sign_envelope(operator, pack({"seq": revocations.seq, "peers": revocations.peers}))


def verify_revocations(blob: bytes, operator_public: bytes) -> Revocations:
    """The list in ``blob`` if the operator signed it; ``RemoteProtocolError`` otherwise."""
    body = unpack_map(open_envelope(blob, operator_public))
    try:
        seq = required(body, "seq", int)
        peers = required(body, "peers", dict)
        revoked = {exact(p, str, "peer"): finite(at, "revoked at") for p, at in peers.items()}
    except ValueError as exc:
        raise RemoteProtocolError(f"malformed revocation list: {exc}") from exc
    if seq < 0:
        raise RemoteProtocolError("malformed revocation list: a negative seq")
    return Revocations(seq, revoked)


def revocations_seq(blob: bytes) -> int:
    """The seq of a list without verifying it (to pick the newest of valid values)."""
    try:
        return exact(unpack_map(unpack_map(blob)["body"])["seq"], int, "seq")
    except (KeyError, TypeError, ValueError, RemoteProtocolError):
        return -1


def check_member(
    blob: bytes,
    operator_public: bytes,
    remote_peer: str,
    now: float,
    revoked: Revocations | None = None,
) -> Certificate:
    """The certificate ``remote_peer`` presented, if it admits that very peer now.

    Raises ``RemoteProtocolError`` saying why not: it does not verify against the
    operator's key, is expired, names another peer, or that peer was revoked.
    """
    cert = verify_certificate(blob, operator_public, now)
    if cert.peer_id != remote_peer:
        raise RemoteProtocolError("certificate was issued to another peer")
    if revoked is not None and remote_peer in revoked:
        raise RemoteProtocolError("peer was revoked by the operator")
    return cert
