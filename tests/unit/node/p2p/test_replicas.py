"""Re-puts go where the value went last time; the DHT is walked again only now and then."""

from __future__ import annotations

from typing import Any

import trio

from node.p2p.replicas import MIN_HOLDERS, REWALK_AFTER, Replicas

KEY, VALUE = b"/bitinglip/node/x", b"record"


class Swarm:
    """Twenty closest peers found by each walk; who was asked to store, and who takes it."""

    def __init__(self) -> None:
        self.closest = [f"peer-{i}" for i in range(20)]
        self.gone: set[str] = set()
        self.asked: list[str] = []
        self.walks = 0

    async def walk(self, key: bytes) -> list[Any]:
        assert key == KEY
        self.walks += 1
        return list(self.closest)

    async def store_at(self, peer: Any, key: bytes, value: bytes) -> bool:
        assert (key, value) == (KEY, VALUE)
        self.asked.append(peer)
        if peer == "broken":
            raise OSError("connection reset")
        return peer not in self.gone


async def test_a_re_put_stores_at_the_last_holders_without_a_walk() -> None:
    swarm = Swarm()
    replicas = Replicas(swarm.store_at, swarm.walk)
    assert await replicas.put(KEY, VALUE) == 20
    assert swarm.walks == 1
    swarm.asked.clear()
    assert await replicas.put(KEY, VALUE) == 20
    assert swarm.walks == 1
    assert sorted(swarm.asked) == sorted(swarm.closest)


async def test_holders_that_left_are_not_asked_again() -> None:
    swarm = Swarm()
    swarm.closest.append("broken")
    replicas = Replicas(swarm.store_at, swarm.walk)
    swarm.gone = {"peer-0", "peer-1"}
    assert await replicas.put(KEY, VALUE) == 18
    swarm.asked.clear()
    assert await replicas.put(KEY, VALUE) == 18
    assert swarm.walks == 1
    assert {"peer-0", "peer-1", "broken"}.isdisjoint(swarm.asked)


async def test_too_few_holders_left_means_a_walk_at_once() -> None:
    swarm = Swarm()
    replicas = Replicas(swarm.store_at, swarm.walk)
    await replicas.put(KEY, VALUE)
    swarm.gone = set(swarm.closest[: 21 - MIN_HOLDERS])  # MIN_HOLDERS - 1 still take it
    swarm.closest = [f"new-{i}" for i in range(20)]
    assert await replicas.put(KEY, VALUE) == 20
    assert swarm.walks == 2
    assert swarm.asked[-20:] and all(p.startswith("new-") for p in swarm.asked[-20:])


async def test_the_dht_is_walked_again_after_a_while(autojump_clock: Any) -> None:
    swarm = Swarm()
    replicas = Replicas(swarm.store_at, swarm.walk)
    await replicas.put(KEY, VALUE)
    await trio.sleep(REWALK_AFTER * 0.7)
    await replicas.put(KEY, VALUE)
    assert swarm.walks == 1
    await trio.sleep(REWALK_AFTER * 0.6)  # past the latest jittered time
    await replicas.put(KEY, VALUE)
    assert swarm.walks == 2


async def test_a_peer_alone_walks_every_time() -> None:
    swarm = Swarm()
    swarm.closest = []
    replicas = Replicas(swarm.store_at, swarm.walk)
    assert await replicas.put(KEY, VALUE) == 0
    swarm.closest = ["peer-0"]
    assert await replicas.put(KEY, VALUE) == 1
    assert swarm.walks == 2
