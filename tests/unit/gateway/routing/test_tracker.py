"""Discovery looks a peer with no node record up again soon, then less and less often."""

from __future__ import annotations

from itertools import pairwise
from types import SimpleNamespace
from typing import cast

import pytest

from gateway.routing.peer_table import PeerTable
from gateway.routing.tracker import RETRY_MAX, Tracker
from node.p2p.admission import Admission
from node.p2p.host import PeerHost


class RecordlessHost:
    """A host that knows one peer, whose node record is not in the DHT (yet)."""

    def __init__(self) -> None:
        self.lookups = 0
        self.admission = Admission(b"operator")
        self.certificate = b"cert"

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
