"""A node's load is its own claim: one that makes up its capacity, its speed or how idle it
is cannot draw every call. Pure: the real peer table, times passed in."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest

from gateway.routing.peer_table import (
    MAX_RANKED_CAPACITY,
    MAX_RANKED_TOKENS_PER_S,
    SLOT_SECONDS,
    PeerTable,
)
from gateway.routing.router import Router
from gateway.routing.tracker import Tracker
from tests.unit.gateway.routing.test_peer_table import T0, live, load, ranked
from tests.unit.gateway.routing.test_router_ranking import FakeNode, FakeTracker, add, answer, chat

HONEST = load(capacity=4, tokens_per_s=50.0)
# Claims a data centre and is always idle, whatever it is given.
LIAR = load(capacity=10**9, tokens_per_s=1e12)


def test_absurd_capacity_and_speed_rank_as_the_caps() -> None:
    table = PeerTable()
    liar = live(table, "liar", LIAR)
    capped = live(table, "capped", load(capacity=MAX_RANKED_CAPACITY, tokens_per_s=1e3))
    assert liar.expected_wait(1.0) == capped.expected_wait(1.0) == 1 / MAX_RANKED_CAPACITY
    fastest = SLOT_SECONDS / (1 + MAX_RANKED_TOKENS_PER_S / 100)
    assert liar.call_seconds("m", None) == capped.call_seconds("m", None) == fastest


def test_a_node_that_says_it_is_idle_is_ranked_by_the_calls_it_holds() -> None:
    table = PeerTable()
    liar = live(table, "liar", load(capacity=2))
    liar.open_calls = 5
    table.update_load("liar", load(capacity=2), now=T0)  # "nothing running here"
    assert liar.expected_wait(1.0) == (5 + 1) / 2


def test_a_lying_node_does_not_draw_every_call() -> None:
    table = PeerTable()
    live(table, "honest", HONEST)
    live(table, "liar", LIAR)
    taken = {"honest": 0, "liar": 0}
    for _ in range(200):  # every call stays open, as the router counts them
        best = table.entries[ranked(table)[0]]
        best.local_delta += 1
        best.open_calls += 1
        taken[best.peer_id] += 1
        table.update_load("liar", LIAR, now=T0)  # and the liar says it is idle again
    assert taken["honest"] > 0
    # Calls go to the liar only while it ranks better than the honest node would.
    ahead = MAX_RANKED_CAPACITY * (1 + MAX_RANKED_TOKENS_PER_S / 100)
    honest_wait = (taken["honest"] + 1) / 4 / 1.5
    assert taken["liar"] <= ahead * honest_wait + 1


async def test_the_router_counts_its_open_calls_whatever_the_node_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("gateway.routing.router.time", SimpleNamespace(time=lambda: T0))
    table, tracker = PeerTable(), FakeTracker()
    router = Router(table, cast(Tracker, tracker))
    entry = add(table, tracker, "peer-a", FakeNode(answer("x")))
    async with router.generate(chat(), timeout=1) as generation:
        table.update_load("peer-a", load(capacity=4), now=T0)  # "idle"
        assert (entry.local_delta, entry.open_calls) == (0, 1)
        await generation.text()
    assert entry.open_calls == 0
