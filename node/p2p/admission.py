"""Who may talk to this peer: members of the swarm, by operator-signed certificate.

``Admission`` is what this peer knows of its peers: the certificates they presented, each
checked against the operator's key and against the peer id Noise authenticated, and the
newest revocation list. A member stays one until its certificate expires or it is revoked.
``authorizer`` checks an RPC ``Hello`` against it (the role decides what a caller may do);
``serve_rpc`` answers admitted callers on a host. The exchange that admits a connection
lives in ``node.p2p.gate``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import trio

from node.p2p.rpc_server import Authorize, Caller, Handler, RpcError, RpcServer
from node.p2p.streams import Libp2pByteStream
from protocols import (
    RPC_PROTOCOL,
    Certificate,
    ErrorCode,
    RemoteProtocolError,
    Revocations,
    check_member,
)

StreamHandler = Callable[[Libp2pByteStream], Awaitable[None]]


class Admission:
    def __init__(self, operator_public: bytes, revocations: Revocations | None = None) -> None:
        self.operator_public = operator_public
        self.revocations = revocations or Revocations()
        self._members: dict[str, Certificate] = {}
        self._changed = trio.Event()

    def check(self, certificate: bytes, remote_peer: str) -> Certificate:
        """The certificate if it admits ``remote_peer`` now; ``RemoteProtocolError`` why not."""
        return check_member(
            certificate, self.operator_public, remote_peer, time.time(), self.revocations
        )

    def admit(self, peer: str, cert: Certificate) -> None:
        self._members[peer] = cert
        self._changed.set()
        self._changed = trio.Event()

    def member(self, peer: str) -> Certificate | None:
        """``peer``'s certificate while it is a member."""
        cert = self._members.get(peer)
        if cert is None or time.time() > cert.expires_at or peer in self.revocations:
            return None
        return cert

    async def wait(self, peer: str, timeout: float) -> Certificate | None:
        """``peer``'s certificate once it is admitted, or ``None`` after ``timeout``."""
        with trio.move_on_after(timeout):
            while (cert := self.member(peer)) is None:
                await self._changed.wait()
            return cert
        return None

    def revoked(self, peer: str) -> bool:
        return peer in self.revocations

    def forget(self, peer: str) -> None:
        self._members.pop(peer, None)

    def expired(self) -> list[str]:
        """Forget the members whose certificates have expired; return them."""
        now = time.time()
        gone = [peer for peer, cert in self._members.items() if now > cert.expires_at]
        for peer in gone:
            del self._members[peer]
        return gone

    def revise(self, revocations: Revocations) -> list[str] | None:
        """Take up ``revocations`` if it is newer than ours; return the members it revokes
        (``None`` if it was not newer)."""
        if revocations.seq <= self.revocations.seq:
            return None
        self.revocations = revocations
        revoked = [peer for peer in self._members if peer in revocations]
        for peer in revoked:
            del self._members[peer]
        return revoked


def authorizer(admission: Admission) -> Authorize:
    def authorize(certificate: bytes, remote_peer: str) -> Caller:
        try:
            cert = admission.check(certificate, remote_peer)
        except RemoteProtocolError as exc:
            reason = str(exc)
            if reason == "certificate was issued to another peer":
                raise RpcError(ErrorCode.UNAUTHORIZED, reason) from exc
            raise RpcError(ErrorCode.UNAUTHORIZED, f"certificate refused: {reason}") from exc
        return Caller(remote_peer, cert.role)

    return authorize


class _Host(Protocol):
    """What ``serve_rpc`` needs of a ``PeerHost``."""

    @property
    def admission(self) -> Admission: ...

    def set_handler(self, protocol: str, handler: StreamHandler) -> None: ...


def serve_rpc(host: _Host, handlers: Mapping[str, Handler]) -> None:
    """Answer admitted peers' RPC calls on ``host`` with ``handlers``."""
    server = RpcServer(handlers, authorizer(host.admission))

    async def serve(stream: Libp2pByteStream) -> None:
        await server.serve(stream, stream.remote_peer)

    host.set_handler(RPC_PROTOCOL, serve)
