"""Discovery: a peer with no node record is looked up again soon, then less and less often;
peers that are gone or silent cannot delay finding the nodes that are here."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import pairwise
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.routing.peer_table import PeerTable
from gateway.routing.tracker import DISCOVER_INTERVAL, RETRY_MAX, Tracker
from keys.files import raw_public
from node.p2p.admission import Admission
from node.p2p.discovery import LOOKUP_TIMEOUT, MAX_LOOKUPS
from node.p2p.host import PeerHost
from node.p2p.rpc_client import ConnectionLost
from protocols import (
    Certificate,
    NodeRecord,
    Revocations,
    issue_certificate,
    node_key,
    peer_id_of,
    sign_record,
)
from tests import swarm_fakes

OPERATOR = Ed25519PrivateKey.generate()


class FakeHost:
    """A host whose DHT holds ``records``; a lookup of any other peer never answers."""

    def __init__(self, records: dict[str, bytes], junk: list[str], connected: set[str]) -> None:
        self.records = records
        self.junk = junk
        self.connected = connected
        self.admission = Admission(raw_public(OPERATOR))
        self.certificate = b"cert"
        self.lookups = 0

    def known_peers(self) -> set[str]:
        return {*self.records, *self.junk} | self.connected

    def connected_members(self) -> set[str]:
        return self.connected

    async def get(self, key: str) -> bytes | None:
        self.lookups += 1
        for peer, value in self.records.items():
            if key == node_key(peer):
                return value
        await trio.sleep_forever()
        raise AssertionError("unreachable")


class RecordlessHost(FakeHost):
    """A host that knows one peer, whose node record is not in the DHT (yet)."""

    def __init__(self) -> None:
        super().__init__({}, [], set())

    def known_peers(self) -> set[str]:
        return {"12D3KooWJustStarted"}

    async def get(self, key: str) -> bytes | None:
        self.lookups += 1
        return None


async def test_a_peer_without_a_record_is_asked_again_with_a_growing_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr("gateway.routing.tracker.time", SimpleNamespace(time=lambda: now[0]))
    host = RecordlessHost()
    tracker = Tracker(cast(PeerHost, host), PeerTable())
    asked_at: list[float] = []
    while now[0] < 1000.0 + 200:
        before = host.lookups
        await tracker.discover()
        if host.lookups > before:
            asked_at.append(now[0] - 1000.0)
        now[0] += 0.5
    # A node that has just started is found within a second or two, never 30 s later...
    assert asked_at[:6] == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0]
    # ...and a peer that never has a record (a client) is asked at most every RETRY_MAX.
    gaps = [b - a for a, b in pairwise(asked_at)]
    assert max(gaps) == RETRY_MAX


def node_record(revoked: bool = False) -> tuple[str, bytes]:
    key = Ed25519PrivateKey.generate()
    peer = peer_id_of(raw_public(key))
    now = time.time()
    cert = issue_certificate(OPERATOR, Certificate(peer, "node", now, now + 3600))
    return peer, sign_record(key, swarm_fakes.node_record(key, issued_at=now), cert)


def junk(count: int) -> list[str]:
    return [peer_id_of(raw_public(Ed25519PrivateKey.generate())) for _ in range(count)]


async def found_after(host: FakeHost, peer: str) -> float:
    """How long (in the test clock's time) discovery takes to start tracking ``peer``."""
    tracker = Tracker(cast(PeerHost, host), PeerTable())
    connecting: list[str] = []
    tracker._connect_soon = lambda record: connecting.append(record.peer_id)  # type: ignore[method-assign]
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(tracker.run)
        while peer not in connecting:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert peer in tracker.table.entries
    return trio.current_time() - started


@pytest.mark.parametrize("count", [10, 200])
async def test_a_connected_node_is_found_in_one_lookup_however_many_peers_do_not_answer(
    autojump_clock: Any, count: int
) -> None:
    peer, record = node_record()
    host = FakeHost({peer: record}, junk(count), connected={peer})
    assert await found_after(host, peer) <= LOOKUP_TIMEOUT


async def test_a_node_known_only_from_the_routing_table_waits_at_most_a_few_rounds(
    autojump_clock: Any,
) -> None:
    peer, record = node_record()
    silent = junk(3 * MAX_LOOKUPS)
    host = FakeHost({peer: record}, silent, connected=set())
    waves = -(-(len(silent) + 1) // MAX_LOOKUPS)
    assert await found_after(host, peer) <= waves * LOOKUP_TIMEOUT + DISCOVER_INTERVAL


async def test_a_revoked_node_is_not_tracked() -> None:
    peer, record = node_record()
    host = FakeHost({peer: record}, [], connected={peer})
    host.admission.revise(Revocations(1, {peer: 0.0}))
    tracker = Tracker(cast(PeerHost, host), PeerTable())
    await tracker.discover()
    assert tracker.table.entries == {}


class MeetingHost(FakeHost):
    """A host whose DHT never answers, connected to one node that serves RPC in memory:
    its record is published only after its first ``unpublished`` asks."""

    def __init__(self, peer: str, record: bytes, unpublished: int) -> None:
        super().__init__({}, [], {peer})
        self.record = record
        self.unpublished = unpublished
        self.asked = 0
        self.nursery: trio.Nursery | None = None

    async def open_stream(self, peer: str, addrs: list[str], protocol: str) -> Any:
        async def record(params: Any, caller: Any, emit: Any) -> dict[str, Any]:
            self.asked += 1
            published = self.asked > self.unpublished
            return {"seq": 1 if published else 0, "record": self.record if published else b""}

        return swarm_fakes.serve_in_memory(self.nursery, {"record": record}, "gateway")


async def test_a_node_met_on_a_connection_is_adopted_without_the_dht(
    autojump_clock: Any,
) -> None:
    peer, record = node_record()
    host = MeetingHost(peer, record, unpublished=3)
    tracker = Tracker(cast(PeerHost, host), PeerTable())
    connecting: list[str] = []
    tracker._connect_soon = lambda record: connecting.append(record.peer_id)  # type: ignore[method-assign]
    tracker.discover = trio.sleep_forever  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        host.nursery = nursery
        await nursery.start(tracker.run)
        started = trio.current_time()
        cert = Certificate(peer, "node", time.time(), time.time() + 60)
        assert host.on_member is not None  # type: ignore[attr-defined]
        host.on_member(peer, cert)  # type: ignore[attr-defined]
        while peer not in connecting:
            await trio.sleep(0.01)
        took = trio.current_time() - started
        nursery.cancel_scope.cancel()
    assert host.lookups == 0  # no DHT round trip
    assert host.asked == 4 and took < 1  # asked again until it had published
    assert peer in tracker.table.entries
    client_met = Certificate(peer, "client", time.time(), time.time() + 60)
    other = Tracker(cast(PeerHost, MeetingHost(peer, record, 0)), PeerTable())
    other._met(peer, client_met)  # a client is not adopted (and no nursery is needed)


async def test_a_connected_node_whose_stream_broke_is_adopted_again_without_the_dht(
    autojump_clock: Any,
) -> None:
    peer, record = node_record()
    host = MeetingHost(peer, record, unpublished=0)
    cert = Certificate(peer, "node", time.time(), time.time() + 3600)
    host.admission.admit(peer, cert)  # connected and admitted long ago: no new admission
    tracker = Tracker(cast(PeerHost, host), PeerTable())
    connecting: list[str] = []

    def connect_soon(record: NodeRecord) -> None:
        connecting.append(record.peer_id)
        tracker._connecting.add(record.peer_id)  # as the real one does

    tracker._connect_soon = connect_soon  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        host.nursery = nursery
        await nursery.start(tracker.run)
        await trio.sleep(DISCOVER_INTERVAL * 2)
        nursery.cancel_scope.cancel()
    assert connecting == [peer]
    assert host.lookups == 0


class BreaksAtTheDeadline:
    """An RPC client whose stream breaks just as the adoption's deadline cancels it: the
    break and the cancellation leave its nursery together."""

    def __init__(self, stream: Any, certificate: bytes) -> None:
        pass

    @asynccontextmanager
    async def running(self) -> AsyncIterator[BreaksAtTheDeadline]:
        async def reader() -> None:
            try:
                await trio.sleep_forever()
            finally:
                raise ConnectionLost("connection to peer lost")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            yield self

    async def call(self, method: str, params: Any, timeout: float) -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_stream_that_breaks_at_the_adoption_deadline_does_not_end_discovery(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer, record = node_record()
    host = MeetingHost(peer, record, unpublished=0)

    async def open_stream(peer: str, addrs: list[str], protocol: str) -> object:
        return object()  # BreaksAtTheDeadline never reads it

    host.open_stream = open_stream  # type: ignore[method-assign]
    monkeypatch.setattr("gateway.routing.tracker.RpcClient", BreaksAtTheDeadline)
    tracker = Tracker(cast(PeerHost, host), PeerTable())
    await tracker._adopt(peer)  # raised an ExceptionGroup out of the tracker before
    assert peer in tracker._readopt and peer not in tracker._adopting
