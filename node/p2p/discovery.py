"""Looks many peers' records up at once, so that dead or silent peers cannot hold up the live.

A DHT lookup for a peer that is gone can take seconds (its closest peers may be gone too);
done one after another, a few of them would keep a node that just joined out of routing
for minutes. Here every lookup runs in parallel, at most ``MAX_LOOKUPS`` at a time (the
DHT's peers refuse more than a dozen inbound streams each), and each gets
``LOOKUP_TIMEOUT``. Peers we are connected to go first: a node that just joined has
connected to someone, while the ids that linger in routing tables are often gone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Container, Iterable

import trio

logger = logging.getLogger(__name__)

LOOKUP_TIMEOUT = 3.0
MAX_LOOKUPS = 32

Get = Callable[[str], Awaitable[bytes | None]]
# Takes what the lookup of a peer found (``None``: nothing, an error, or too slow).
Found = Callable[[str, bytes | None], None]


async def look_up(get: Get, found: Found, peers: Iterable[str], first: Container[str] = ()) -> None:
    """``found(peer, await get(peer))`` for every peer, each as soon as it is known.

    The whole takes at most ``LOOKUP_TIMEOUT`` per ``MAX_LOOKUPS`` peers, and peers in
    ``first`` are all answered within the first ``LOOKUP_TIMEOUT`` when there are at most
    ``MAX_LOOKUPS`` of them.
    """
    ordered = sorted(dict.fromkeys(peers), key=lambda peer: peer not in first)
    limit = trio.CapacityLimiter(MAX_LOOKUPS)

    async def one(peer: str) -> None:
        value = None
        try:
            with trio.move_on_after(LOOKUP_TIMEOUT):
                value = await get(peer)
        except Exception as exc:  # a DHT hiccup: this peer is missing from one round
            logger.debug("lookup of %s failed: %r", peer, exc)
        finally:
            limit.release_on_behalf_of(peer)
        found(peer, value)

    async with trio.open_nursery() as nursery:
        for peer in ordered:
            await limit.acquire_on_behalf_of(peer)
            nursery.start_soon(one, peer)
