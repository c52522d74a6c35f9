"""Who may call this peer: the RPC ``Hello`` must carry an operator-signed certificate
naming the very peer that Noise authenticated on this connection."""

from __future__ import annotations

import time

from node.p2p.rpc_server import Authorize, Caller, RpcError
from protocols import ErrorCode, RemoteProtocolError, verify_certificate


def authorizer(operator_public: bytes) -> Authorize:
    def authorize(certificate: bytes, remote_peer: str) -> Caller:
        try:
            cert = verify_certificate(certificate, operator_public, time.time())
        except RemoteProtocolError as exc:
            raise RpcError(ErrorCode.UNAUTHORIZED, f"certificate refused: {exc}") from exc
        if cert.peer_id != remote_peer:
            raise RpcError(ErrorCode.UNAUTHORIZED, "certificate was issued to another peer")
        return Caller(remote_peer, cert.role)

    return authorize
