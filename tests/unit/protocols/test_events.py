"""Watch updates and gateway events: wire round trips, and malformed maps refused."""

from __future__ import annotations

import math
from typing import Any

import pytest

from protocols import (
    Demand,
    Load,
    ModelDemand,
    RemoteProtocolError,
    RevokeEvent,
    UsageEvent,
    WatchUpdate,
    event_from_wire,
    event_to_wire,
)
from protocols.events import MAX_MODELS


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
    ("body", "message"),
    [
        ({"record_seq": 1.5}, "malformed watch update: record_seq should be an integer"),
        ({"record_seq": "7"}, "malformed watch update: record_seq should be an integer"),
        ({"record_seq": True}, "malformed watch update: record_seq should be an integer"),
        ({"inflight": "3"}, "malformed load: Load.inflight should be an integer"),
    ],
)
def test_a_malformed_watch_update_says_what_is_wrong(body: dict[str, Any], message: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        WatchUpdate.from_wire(body)
    assert str(caught.value) == message


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


USAGE = {"kind": "usage", "user": "alice", "requests": 1, "tokens": 20, "images": 0, "at": 1.7e9}
REVOKE = {"kind": "revoke", "jti": "k1", "expires_at": 1.8e9}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (USAGE | {"user": None}, "malformed usage event: user should be a string"),
        (USAGE | {"requests": "1"}, "malformed usage event: requests should be an integer"),
        (USAGE | {"tokens": 2.0}, "malformed usage event: tokens should be an integer"),
        (USAGE | {"images": True}, "malformed usage event: images should be an integer"),
        (USAGE | {"at": math.inf}, "malformed usage event: at should be a finite number"),
        (USAGE | {"at": "1.7e9"}, "malformed usage event: at should be a finite number"),
        (REVOKE | {"jti": b"k1"}, "malformed revoke event: jti should be a string"),
        (
            REVOKE | {"expires_at": math.nan},
            "malformed revoke event: expires_at should be a finite number",
        ),
        (
            REVOKE | {"expires_at": -math.inf},
            "malformed revoke event: expires_at should be a finite number",
        ),
        (
            REVOKE | {"expires_at": None},
            "malformed revoke event: expires_at should be a finite number",
        ),
    ],
)
def test_a_malformed_event_says_which_field_is_wrong(body: dict[str, Any], message: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        event_from_wire(body)
    assert str(caught.value) == message


def test_a_revoke_event_with_an_integer_expiry_reads_it_as_a_float() -> None:
    event = event_from_wire(REVOKE | {"expires_at": 1800})
    assert event == RevokeEvent("k1", 1800.0)
    assert isinstance(event, RevokeEvent) and type(event.expires_at) is float


def test_demand_round_trip() -> None:
    demand = Demand({"m": ModelDemand(queued=3, oldest_wait=1.5, refused=1, ready=0, loading=1)})
    assert Demand.from_wire(demand.to_wire()) == demand


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"models": []},
        {"models": {"m": {"queued": "3"}}},
        {"models": {"m": {"queued": 1, "oldest_wait": 0.0, "refused": 0, "ready": 0}}},
        {"models": {f"m{i}": {} for i in range(MAX_MODELS + 1)}},
    ],
)
def test_a_malformed_demand_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError):
        Demand.from_wire(body)
