"""Who may call a peer: the authorizer that checks the RPC ``Hello`` certificate."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys.files import raw_public
from node.p2p.admission import authorizer
from node.p2p.rpc_server import Caller, RpcError
from protocols import Certificate, ErrorCode, issue_certificate, peer_id_of

OPERATOR = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()
PEER = peer_id_of(raw_public(Ed25519PrivateKey.generate()))
OTHER_PEER = peer_id_of(raw_public(Ed25519PrivateKey.generate()))
HOUR = 3600.0


def cert(
    peer: str = PEER,
    role: str = "gateway",
    starts: float = -HOUR,
    ends: float = HOUR,
    signer: Ed25519PrivateKey = OPERATOR,
) -> bytes:
    """A certificate valid from ``starts`` to ``ends`` seconds from now."""
    now = time.time()
    return issue_certificate(signer, Certificate(peer, role, now + starts, now + ends))


def authorize(certificate: bytes, remote_peer: str = PEER) -> Caller:
    return authorizer(raw_public(OPERATOR))(certificate, remote_peer)


@pytest.mark.parametrize("role", ["node", "gateway", "client"])
def test_a_valid_certificate_admits_its_peer_in_its_role(role: str) -> None:
    assert authorize(cert(role=role)) == Caller(PEER, role)


def test_the_caller_is_the_authenticated_peer() -> None:
    caller = authorize(cert(peer=OTHER_PEER), remote_peer=OTHER_PEER)
    assert caller.peer_id == OTHER_PEER
    assert caller.role == "gateway"


def test_a_certificate_issued_to_another_peer_is_refused() -> None:
    with pytest.raises(RpcError) as refused:
        authorize(cert(peer=OTHER_PEER))
    assert refused.value.code is ErrorCode.UNAUTHORIZED
    assert refused.value.message == "certificate was issued to another peer"


@pytest.mark.parametrize(
    ("certificate", "why"),
    [
        (cert(ends=-1.0), "certificate is expired or not yet valid"),
        (cert(starts=HOUR, ends=2 * HOUR), "certificate is expired or not yet valid"),
        (cert(signer=STRANGER), "bad signature"),
        (cert(role="admin"), "certificate for unknown role 'admin'"),
        (b"not a certificate", "malformed msgpack"),
    ],
    ids=["expired", "not-yet-valid", "foreign-operator", "unknown-role", "garbage"],
)
def test_an_invalid_certificate_is_refused_with_the_reason(certificate: bytes, why: str) -> None:
    with pytest.raises(RpcError) as refused:
        authorize(certificate)
    assert refused.value.code is ErrorCode.UNAUTHORIZED
    assert refused.value.message.startswith(f"certificate refused: {why}")
    assert isinstance(refused.value.__cause__, Exception)


def test_the_operator_key_is_the_one_given() -> None:
    other = authorizer(raw_public(STRANGER))
    assert other(cert(signer=STRANGER), PEER) == Caller(PEER, "gateway")
    with pytest.raises(RpcError, match="bad signature"):
        other(cert(), PEER)
