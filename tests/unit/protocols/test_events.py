"""Watch updates and gateway events: wire round trips, and malformed maps refused."""

from __future__ import annotations

import math
from typing import Any

import pytest

from protocols import (
    Load,
    RemoteProtocolError,
    RevokeEvent,
    UsageEvent,
    WatchUpdate,
    event_from_wire,
    event_to_wire,
)


def test_watch_update_round_trip() -> None:
    update = WatchUpdate(Load(1, 2, 4, 30.5, 1 << 30, False), 7)
    assert WatchUpdate.from_wire(update.to_wire()) == update


def test_a_missing_field_reads_as_idle() -> None:
    assert WatchUpdate.from_wire({}) == WatchUpdate(Load(0, 0, 1, 0.0, 0, False), 0)


@pytest.mark.parametrize(
    "body", [{"inflight": "3"}, {"draining": 1}, {"tokens_per_s": math.nan}, {"record_seq": 1.5}]
)
def test_a_malformed_watch_update_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError):
        WatchUpdate.from_wire(body)


@pytest.mark.parametrize(
    "event",
    [UsageEvent("alice", 1, 20, 0, 1.7e9), RevokeEvent("k1", 1.8e9), RevokeEvent("k2", math.inf)],
)
def test_gateway_event_round_trip(event: UsageEvent | RevokeEvent) -> None:
    assert event_from_wire(event_to_wire(event)) == event


def test_unknown_kinds_are_skipped_and_malformed_ones_refused() -> None:
    assert event_from_wire({"kind": "hello"}) is None
    with pytest.raises(RemoteProtocolError):
        event_from_wire({"kind": "usage", "user": "alice", "requests": "1"})
    with pytest.raises(RemoteProtocolError):
        event_from_wire({"kind": "revoke", "jti": "k", "expires_at": math.nan})
