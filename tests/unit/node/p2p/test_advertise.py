"""The advertiser: a node's record is served at once, its first DHT write is spread."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys.files import raw_public
from node.p2p.advertise import PROVIDE_AGAIN, Advertiser
from node.p2p.host import PeerHost
from protocols import (
    Certificate,
    ModelInfo,
    NodeRecord,
    issue_certificate,
    model_key,
    node_key,
    peer_id_of,
    verify_record,
)
from tests.swarm_fakes import node_record

OPERATOR = Ed25519PrivateKey.generate()
KEY = Ed25519PrivateKey.generate()
PEER = peer_id_of(raw_public(KEY))
TTL = 30.0


class FakeHost:
    """What the advertiser writes to the DHT, and when (trio's clock)."""

    def __init__(self) -> None:
        now = time.time()
        self.certificate = issue_certificate(OPERATOR, Certificate(PEER, "node", now, now + 3600))
        self.nat = SimpleNamespace(settings=SimpleNamespace(serve=False), private=False)
        self.writes: list[tuple[float, str]] = []

    async def put(self, key: str, value: bytes) -> None:
        self.writes.append((trio.current_time(), key))

    async def provide(self, key: str) -> None:
        self.writes.append((trio.current_time(), key))


def build(state: list[str]) -> Any:
    def record(seq: int, now: float) -> NodeRecord:
        models = [ModelInfo("echo", "text-generation", "float32", 1, 1, state[0])]
        return node_record(KEY, seq=seq, issued_at=now, ttl=TTL, models=models)

    return record


def served(advertiser: Advertiser) -> NodeRecord:
    return verify_record(advertiser.signed, raw_public(OPERATOR), time.time(), key=node_key(PEER))


async def test_the_record_is_served_at_once_and_written_to_the_dht_within_the_spread(
    autojump_clock: Any,
) -> None:
    host, state = FakeHost(), ["loading"]
    advertiser = Advertiser(cast(PeerHost, host), KEY, build(state), TTL, (TTL / 8, TTL / 2))
    async with trio.open_nursery() as nursery:
        started = trio.current_time()
        nursery.start_soon(advertiser.run)
        await trio.sleep(0.0001)
        assert served(advertiser).models[0].state == "loading"
        # A model ready before the first write: signed again and served, not yet written.
        state[0] = "ready"
        advertiser.republish_soon()
        await trio.sleep(0.0001)
        assert served(advertiser).models[0].state == "ready"
        await trio.sleep(TTL / 2 + 0.001)
        nursery.cancel_scope.cancel()
    first, key = host.writes[0]
    assert key == node_key(PEER)
    assert TTL / 8 <= first - started <= TTL / 2
    assert (first, model_key("echo")) in host.writes
    assert served(advertiser).models[0].state == "ready"


async def test_spread_writes_of_many_nodes_fall_at_different_times(autojump_clock: Any) -> None:
    hosts = [FakeHost() for _ in range(20)]
    async with trio.open_nursery() as nursery:
        for host in hosts:
            advertiser = Advertiser(cast(PeerHost, host), KEY, build(["ready"]), TTL, (0, 10))
            nursery.start_soon(advertiser.run)
        await trio.sleep(10.001)
        nursery.cancel_scope.cancel()
    firsts = sorted(host.writes[0][0] for host in hosts)
    assert firsts[-1] - firsts[0] > 5  # not all in the same instant, as without a spread


async def test_without_a_spread_the_first_write_is_at_once(autojump_clock: Any) -> None:
    host = FakeHost()
    advertiser = Advertiser(cast(PeerHost, host), KEY, build(["ready"]), TTL)
    async with trio.open_nursery() as nursery:
        started = trio.current_time()
        nursery.start_soon(advertiser.run)
        await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert host.writes[0] == (started, node_key(PEER))


async def test_a_key_is_provided_once_and_again_only_after_an_hour(autojump_clock: Any) -> None:
    host = FakeHost()
    advertiser = Advertiser(cast(PeerHost, host), KEY, build(["ready"]), TTL)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(advertiser.run)
        await trio.sleep(PROVIDE_AGAIN - 1)
        puts = [t for t, key in host.writes if key == node_key(PEER)]
        provides = [t for t, key in host.writes if key == model_key("echo")]
        assert len(puts) >= PROVIDE_AGAIN / (TTL / 3) - 1  # the record: every third of its TTL
        assert provides == [puts[0]]  # the model: once
        await trio.sleep(TTL)
        nursery.cancel_scope.cancel()
    assert len([key for _, key in host.writes if key == model_key("echo")]) == 2


async def test_a_node_behind_a_nat_publishes_its_relay_address_at_once(autojump_clock: Any) -> None:
    host = FakeHost()
    advertiser = Advertiser(cast(PeerHost, host), KEY, build(["ready"]), TTL, (TTL / 8, TTL / 2))
    async with trio.open_nursery() as nursery:
        started = trio.current_time()
        nursery.start_soon(advertiser.run)
        await trio.sleep(1)
        assert host.writes == []
        advertiser.publish_now()  # a relay slot taken
        await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert host.writes[0] == (started + 1, node_key(PEER))
