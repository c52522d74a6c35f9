"""Who may call this peer: the RPC ``Hello`` must carry an operator-signed certificate
naming the very peer that Noise authenticated on this connection; ``serve_rpc`` answers
admitted callers on a host."""

from __future__ import annotations

import time
from collections.abc import Mapping

from node.p2p.host import PeerHost
from node.p2p.rpc_server import Authorize, Caller, Handler, RpcError, RpcServer
from node.p2p.streams import Libp2pByteStream
from protocols import RPC_PROTOCOL, ErrorCode, RemoteProtocolError, verify_certificate


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


def serve_rpc(host: PeerHost, operator_public: bytes, handlers: Mapping[str, Handler]) -> None:
    """Answer admitted peers' RPC calls on ``host`` with ``handlers``."""
    server = RpcServer(handlers, authorizer(operator_public))

    async def serve(stream: Libp2pByteStream) -> None:
        await server.serve(stream, stream.remote_peer)

    host.set_handler(RPC_PROTOCOL, serve)
