"""The gateway as a peer of the swarm: its signed record and its RPC service.

A gateway advertises itself like a node does (role ``gateway``, no models), so other
gateways find it through the DHT and subscribe to its events.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys.files import raw_public
from node.p2p.admission import authorizer
from node.p2p.advertise import RecordFactory
from node.p2p.host import PeerHost
from node.p2p.rpc_server import Handler, RpcServer
from node.p2p.streams import Libp2pByteStream
from node.p2p.version import VERSION
from protocols import RPC_PROTOCOL, Hardware, Load, NodeRecord

GATEWAY_RECORD_TTL = 30.0


def gateway_record(swarm: PeerHost, identity: Ed25519PrivateKey) -> RecordFactory:
    def build(seq: int, now: float) -> NodeRecord:
        return NodeRecord(
            peer_id=swarm.peer_id,
            public_key=raw_public(identity),
            role="gateway",
            version=VERSION,
            addrs=swarm.addrs(),
            hardware=Hardware("cpu", "gateway", 0, 0),
            models=[],
            load=Load(0, 0, 0, 0.0, 0),
            seq=seq,
            issued_at=now,
            ttl=GATEWAY_RECORD_TTL,
        )

    return build


def serve_rpc(swarm: PeerHost, operator_public: bytes, handlers: Mapping[str, Handler]) -> None:
    """Answer admitted peers' RPC calls on this gateway."""
    server = RpcServer(handlers, authorizer(operator_public))

    async def serve(stream: Libp2pByteStream) -> None:
        await server.serve(stream, stream.remote_peer)

    swarm.set_handler(RPC_PROTOCOL, serve)
