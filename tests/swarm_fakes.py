"""Pieces of a swarm that unit tests stand in for: a node's record, and a peer's RPC
service answering over an in-memory stream."""

from __future__ import annotations

import time
from typing import Any

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys.files import raw_public
from node.p2p.rpc_server import Caller, Handler, RpcServer
from node.p2p.streams import TrioByteStream
from protocols import Hardware, Load, ModelInfo, NodeRecord, peer_id_of


def node_record(
    key: Ed25519PrivateKey,
    *,
    seq: int = 1,
    issued_at: float | None = None,
    ttl: float = 3600,
    models: list[ModelInfo] | None = None,
) -> NodeRecord:
    """The unsigned record of a CPU node with ``key`` (one ready echo model unless told)."""
    return NodeRecord(
        peer_id=peer_id_of(raw_public(key)),
        public_key=raw_public(key),
        role="node",
        version="test",
        addrs=[],
        hardware=Hardware("cpu", "test", "RAM", 1, 1),
        models=[ModelInfo("echo", "text-generation", "float32", 1, 1, "ready")]
        if models is None
        else models,
        load=Load(0, 0, 1, 0.0, 1),
        seq=seq,
        issued_at=time.time() if issued_at is None else issued_at,
        ttl=ttl,
    )


def serve_in_memory(nursery: trio.Nursery | None, methods: dict[str, Handler], role: str) -> Any:
    """One end of an in-memory stream whose other end an ``RpcServer`` of ``methods``
    serves, in ``nursery``, to a caller in ``role``."""
    assert nursery is not None, "the test sets the host's nursery first"
    left, right = trio.testing.memory_stream_pair()
    server = RpcServer(methods, lambda cert, peer: Caller(peer, role))
    nursery.start_soon(server.serve, TrioByteStream(right), role)
    return TrioByteStream(left)
