"""Forgets peers whose addresses expired, without py-libp2p's sweep taking the host down.

py-libp2p 0.8.1's sweep (``PeerStore.start_cleanup_task``) asks each expired peer for its
addresses before dropping its signed peer record, and that question raises
``PeerStoreError("peer ID is expired")`` for exactly those peers. The first peer that had
sent a signed record (identify sends one) and whose addresses expired ended the sweep's
task, and with it the host's nursery: a swarm of a thousand on one machine lost a process of
fifty nodes to it within four minutes. ``sweep`` drops those records first, then runs
py-libp2p's own sweep, which then finds nothing to ask about.
"""

from __future__ import annotations

from typing import Any

import trio

SWEEP_INTERVAL = 60.0


def sweep(store: Any) -> None:
    """Drop every peer whose addresses expired, with its signed record."""
    for peer, data in list(store.peer_data_map.items()):
        if data.is_expired():
            store.peer_record_map.pop(peer, None)
    store._cleanup_expired_records()


async def keep_swept(store: Any) -> None:
    while True:
        await trio.sleep(SWEEP_INTERVAL)
        sweep(store)
