"""The light client's snapshot: peers that are gone or silent cannot hold it up."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys.files import raw_public
from node.cli.light_client import LOOKUP_WAIT, LightClient
from node.p2p.admission import Admission
from node.p2p.host import PeerHost
from protocols import (
    Certificate,
    issue_certificate,
    node_key,
    peer_id_of,
    sign_record,
)
from tests.swarm_fakes import node_record, serve_in_memory

OPERATOR = Ed25519PrivateKey.generate()


def node() -> tuple[str, bytes]:
    key = Ed25519PrivateKey.generate()
    peer = peer_id_of(raw_public(key))
    now = time.time()
    record = node_record(key, issued_at=now, models=[])
    cert = issue_certificate(OPERATOR, Certificate(peer, "node", now, now + 3600))
    return peer, sign_record(key, record, cert)


class SwarmWithJunk:
    """One node with a record, and many ids whose lookups never answer; no one answers RPC."""

    def __init__(self, peer: str, record: bytes, junk: int) -> None:
        self.record = (peer, record)
        self.junk = [peer_id_of(raw_public(Ed25519PrivateKey.generate())) for _ in range(junk)]
        self.admission = Admission(raw_public(OPERATOR))
        self.host = SimpleNamespace(get_connected_peers=lambda: [peer])
        self.certificate = b"cert"

    def known_peers(self) -> set[str]:
        return {self.record[0], *self.junk}

    def connected_members(self) -> set[str]:
        return {self.record[0]}

    async def get(self, key: str) -> bytes | None:
        if key == node_key(self.record[0]):
            return self.record[1]
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def open_stream(self, peer: str, addrs: list[str], protocol: str) -> Any:
        raise OSError("not answering")


async def test_a_snapshot_takes_one_lookup_timeout_however_many_peers_are_silent(
    autojump_clock: Any,
) -> None:
    peer, record = node()
    host = SwarmWithJunk(peer, record, junk=200)
    async with trio.open_nursery() as nursery:
        client = LightClient(cast(PeerHost, host), nursery)
        started = trio.current_time()
        statuses = await client.snapshot()
        assert trio.current_time() - started <= LOOKUP_WAIT
        nursery.cancel_scope.cancel()
    assert [s.peer_id for s in statuses] == [peer]


class NodeNotInTheDht(SwarmWithJunk):
    """A node that serves its record over RPC (in memory) before the DHT holds it."""

    def __init__(self, peer: str, record: bytes) -> None:
        super().__init__(peer, record, junk=0)
        self.nursery: trio.Nursery | None = None
        self.lookups = 0

    async def get(self, key: str) -> bytes | None:
        self.lookups += 1
        return None

    async def open_stream(self, peer: str, addrs: list[str], protocol: str) -> Any:
        async def record(params: Any, caller: Any, emit: Any) -> dict[str, Any]:
            return {"seq": 1, "record": self.record[1]}

        async def status(params: Any, caller: Any, emit: Any) -> dict[str, Any]:
            return {"inflight": 0, "queued": 0, "capacity": 1}

        return serve_in_memory(self.nursery, {"record": record, "status": status}, "client")


async def test_a_node_is_listed_from_its_own_answer_before_its_first_dht_write(
    autojump_clock: Any,
) -> None:
    peer, record = node()
    host = NodeNotInTheDht(peer, record)
    async with trio.open_nursery() as nursery:
        host.nursery = nursery
        client = LightClient(cast(PeerHost, host), nursery)
        statuses = await client.snapshot()
        nursery.cancel_scope.cancel()
    assert [(s.peer_id, s.healthy) for s in statuses] == [(peer, True)]
    assert host.lookups == 0  # no DHT walk for a peer that answered
