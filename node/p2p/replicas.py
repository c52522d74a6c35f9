"""Puts a DHT value again where it was put last time, walking the DHT only now and then.

py-libp2p's ``put_value`` walks to the key's twenty closest peers at every put: in a swarm
of a hundred the walk asks about sixty of them, and a record re-put every 40 s made that
walk most of an idle node's DHT traffic. The closest peers of a key change only when peers
come and go, so ``Replicas.put`` stores at the peers that took the value last time, one
request each, and walks again after ``REWALK_AFTER`` (jittered, so a swarm that started
together does not walk together), or at once when fewer than ``MIN_HOLDERS`` of them take it
(they left: the walk finds who is closest now).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import trio

logger = logging.getLogger(__name__)

REWALK_AFTER = 600.0  # go-libp2p's routing-table refresh period
MIN_HOLDERS = 5  # fewer take it than this: walk to whoever is closest now
STORE_TIMEOUT = 5.0
STORES_AT_ONCE = 10  # py-libp2p's ALPHA

# Stores ``value`` under ``key`` at one peer; whether it took it.
StoreAt = Callable[[Any, bytes, bytes], Awaitable[bool]]
# The peers closest to ``key`` found by walking the DHT.
Walk = Callable[[bytes], Awaitable[list[Any]]]


class Replicas:
    def __init__(self, store_at: StoreAt, walk: Walk) -> None:
        self._store_at = store_at
        self._walk = walk
        # Per key: the peers that took it last time, and when (trio's clock) to walk again.
        self._holders: dict[bytes, tuple[list[Any], float]] = {}

    async def put(self, key: bytes, value: bytes) -> int:
        """Store ``value`` at the key's closest peers; return how many took it."""
        held, walk_at = self._holders.get(key, ([], 0.0))
        if held and trio.current_time() < walk_at:
            took = await self._store_all(held, key, value)
            if len(took) >= min(MIN_HOLDERS, len(held)):
                self._holders[key] = (took, walk_at)
                return len(took)
            logger.debug("%d of %d holders took %r: walking", len(took), len(held), key)
        took = await self._store_all(await self._walk(key), key, value)
        rewalk = trio.current_time() + REWALK_AFTER * random.uniform(0.75, 1.25)
        self._holders[key] = (took, rewalk)
        return len(took)

    async def _store_all(self, peers: list[Any], key: bytes, value: bytes) -> list[Any]:
        took: list[Any] = []
        limit = trio.Semaphore(STORES_AT_ONCE)

        async def one(peer: Any) -> None:
            async with limit:
                try:
                    with trio.move_on_after(STORE_TIMEOUT):
                        if await self._store_at(peer, key, value):
                            took.append(peer)
                except Exception as exc:  # gone, refused: another holder serves
                    logger.debug("storing %r at %s failed: %r", key, peer, exc)

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(one, peer)
        return took
