"""The gateway as a peer of the swarm: its signed record.

A gateway advertises itself like a node does (role ``gateway``, no models), so other
gateways find it through the DHT and subscribe to its events.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys.files import raw_public
from node.p2p.advertise import RecordFactory
from node.p2p.host import PeerHost
from node.p2p.version import VERSION
from protocols import Hardware, Load, NodeRecord

GATEWAY_RECORD_TTL = 30.0


def gateway_record(host: PeerHost, identity: Ed25519PrivateKey) -> RecordFactory:
    def build(seq: int, now: float) -> NodeRecord:
        return NodeRecord(
            peer_id=host.peer_id,
            public_key=raw_public(identity),
            role="gateway",
            version=VERSION,
            addrs=host.addrs(),
            hardware=Hardware("cpu", "gateway", "", 0, 0),  # a gateway lends no memory
            models=[],
            load=Load(0, 0, 0, 0.0, 0),
            seq=seq,
            issued_at=now,
            ttl=GATEWAY_RECORD_TTL,
        )

    return build
