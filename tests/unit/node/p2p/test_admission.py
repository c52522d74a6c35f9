"""Who may call a peer: the authorizer that checks the RPC ``Hello`` certificate, and
``serve_rpc`` that puts it in front of a host's RPC handlers."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys.files import raw_public
from node.p2p.admission import Admission, authorizer, serve_rpc
from node.p2p.rpc_client import CallFailed, RemoteError, RpcClient
from node.p2p.rpc_server import Caller, RpcError
from node.p2p.streams import TrioByteStream
from protocols import (
    RPC_PROTOCOL,
    Certificate,
    ErrorCode,
    Revocations,
    issue_certificate,
    peer_id_of,
)

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
    return authorizer(Admission(raw_public(OPERATOR)))(certificate, remote_peer)


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


def test_a_revoked_peer_is_refused_whatever_its_certificate() -> None:
    admission = Admission(raw_public(OPERATOR), Revocations(1, {PEER: 0.0}))
    with pytest.raises(RpcError) as refused:
        authorizer(admission)(cert(), PEER)
    assert refused.value.message == "certificate refused: peer was revoked by the operator"
    assert authorizer(admission)(cert(peer=OTHER_PEER), OTHER_PEER).peer_id == OTHER_PEER


def test_the_operator_key_is_the_one_given() -> None:
    other = authorizer(Admission(raw_public(STRANGER)))
    assert other(cert(signer=STRANGER), PEER) == Caller(PEER, "gateway")
    with pytest.raises(RpcError, match="bad signature"):
        other(cert(), PEER)


class FakeHost:
    """Records the stream handler ``serve_rpc`` sets, as a ``PeerHost`` would."""

    def __init__(self) -> None:
        self.admission = Admission(raw_public(OPERATOR))
        self.handlers: dict[str, Callable[[Any], Awaitable[None]]] = {}

    def set_handler(self, protocol: str, handler: Callable[[Any], Awaitable[None]]) -> None:
        self.handlers[protocol] = handler


class PeerStream(TrioByteStream):
    """A memory stream that says which peer Noise authenticated, as a libp2p stream does."""

    def __init__(self, stream: trio.abc.Stream, remote_peer: str) -> None:
        super().__init__(stream)
        self.remote_peer = remote_peer


async def status(handler: Callable[[Any], Awaitable[None]], peer: str, hello: bytes) -> Any:
    """Call ``status`` through ``handler`` from ``peer``; the reply or the refusal."""
    left, right = trio.testing.memory_stream_pair()
    answer: Any = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handler, PeerStream(right, peer))
        client = RpcClient(TrioByteStream(left), hello)
        async with client.running():
            try:
                answer = await client.call("status", {})
            except CallFailed as exc:
                answer = exc
        nursery.cancel_scope.cancel()
    return answer


async def test_serve_rpc_answers_admitted_peers_on_the_rpc_protocol() -> None:
    host = FakeHost()

    async def rpc_status(params: dict[str, Any], caller: Caller, emit: Any) -> dict[str, Any]:
        return {"caller": caller.peer_id, "role": caller.role}

    serve_rpc(host, {"status": rpc_status})
    assert list(host.handlers) == [RPC_PROTOCOL]
    handler = host.handlers[RPC_PROTOCOL]
    assert await status(handler, PEER, cert()) == {"caller": PEER, "role": "gateway"}
    # The certificate must name the peer the stream came from, and be the operator's.
    for peer, hello in ((OTHER_PEER, cert()), (PEER, cert(signer=STRANGER))):
        refused = await status(handler, peer, hello)
        assert isinstance(refused, RemoteError) and refused.code is ErrorCode.UNAUTHORIZED


def certificate(peer: str = PEER, role: str = "node", ends: float = HOUR) -> Certificate:
    now = time.time()
    return Certificate(peer, role, now - 1, now + ends)


async def test_waiting_for_a_member_ends_when_it_is_admitted_or_in_time(
    autojump_clock: Any,
) -> None:
    admission = Admission(raw_public(OPERATOR))
    started = trio.current_time()
    assert await admission.wait(PEER, 5) is None
    assert trio.current_time() - started == 5
    cert = certificate()
    got: list[Certificate | None] = []

    async def waiter() -> None:
        got.append(await admission.wait(PEER, 5))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(1)
        admission.admit(PEER, cert)
    assert got == [cert]
    assert await admission.wait(PEER, 0) == cert


def test_a_member_stays_one_until_its_certificate_expires_or_it_is_revoked() -> None:
    admission = Admission(raw_public(OPERATOR))
    admission.admit(PEER, certificate())
    admission.admit(OTHER_PEER, certificate(OTHER_PEER, ends=-1))
    assert admission.member(PEER) is not None
    assert admission.member(OTHER_PEER) is None  # expired
    assert admission.expired() == [OTHER_PEER]
    assert admission.expired() == []
    assert admission.revise(Revocations(1, {PEER: 0.0})) == [PEER]
    assert admission.member(PEER) is None and admission.revoked(PEER)
    # An older or equal list changes nothing.
    assert admission.revise(Revocations(1, {})) is None
    assert admission.revise(Revocations(0, {})) is None
    assert admission.revoked(PEER)
