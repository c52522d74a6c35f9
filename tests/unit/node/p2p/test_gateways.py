"""A node stays connected to every gateway, and walks the DHT for them only now and then."""

from __future__ import annotations

from typing import Any, cast

import trio

from node.p2p.gateways import (
    ASK_INTERVAL,
    CHECK_INTERVAL,
    REACH_INTERVAL,
    RETRY_FIRST,
    RETRY_MAX,
    keep_reaching,
)
from node.p2p.host import PeerHost

GATEWAYS = {"gateway-a", "gateway-b"}


class FakeHost:
    """Gateways named by the peers we are connected to; connections that can be lost."""

    def __init__(self) -> None:
        self.connected: set[str] = {"gateway-a"}  # the bootstrap peer
        self.walks = 0
        self.asked: list[tuple[str, ...]] = []
        self.named = set(GATEWAYS)  # what the gateways we meet name
        self.dials: list[tuple[float, str]] = []

    def connected_members(self) -> set[str]:
        return set(self.connected)

    async def providers_nearby(self, key: str, roles: Any = ()) -> set[str]:
        self.asked.append(tuple(roles))
        return set(self.named)

    async def providers(self, key: str) -> set[str]:
        self.walks += 1
        return set(self.named)

    async def connect_known(self, peer: str) -> bool:
        self.dials.append((trio.current_time(), peer))
        self.connected.add(peer)
        return True


async def test_a_lost_gateway_is_reconnected_within_seconds_without_a_walk(
    autojump_clock: Any,
) -> None:
    host = FakeHost()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_reaching, cast(PeerHost, host))
        await trio.sleep(1)
        assert host.connected == GATEWAYS  # the other gateway, named by the bootstrap peer
        assert host.walks == 0
        await trio.sleep(60)
        host.connected.discard("gateway-b")  # its connection dropped
        lost = trio.current_time()
        await trio.sleep(CHECK_INTERVAL + RETRY_MAX)
        nursery.cancel_scope.cancel()
    assert host.connected == GATEWAYS
    again = [t for t, peer in host.dials if peer == "gateway-b" and t >= lost]
    assert again and again[0] - lost <= CHECK_INTERVAL + 1.5 * RETRY_FIRST  # at most a retry
    assert host.walks == 0  # the gateways known were enough


async def test_the_dht_is_walked_for_new_gateways_every_few_minutes(autojump_clock: Any) -> None:
    host = FakeHost()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_reaching, cast(PeerHost, host))
        await trio.sleep(REACH_INTERVAL * 3.7)
        nursery.cancel_scope.cancel()
    assert 2 <= host.walks <= 4


async def test_a_gateway_named_later_by_a_gateway_is_reached_without_a_walk(
    autojump_clock: Any,
) -> None:
    host = FakeHost()
    host.named = {"gateway-a"}  # the bootstrap gateway had not met the other yet
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_reaching, cast(PeerHost, host))
        await trio.sleep(1)
        assert host.connected == {"gateway-a"}
        host.named = set(GATEWAYS)  # now it has
        await trio.sleep(ASK_INTERVAL + CHECK_INTERVAL)
        nursery.cancel_scope.cancel()
    assert host.connected == GATEWAYS
    assert host.walks == 0
    assert ("gateway",) in host.asked  # only gateways are asked, one request each
