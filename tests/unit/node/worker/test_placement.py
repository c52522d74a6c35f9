"""Placement decisions from demand reports: what loads, what unloads, and what waits."""

from __future__ import annotations

from typing import Any

import pytest

from node.worker.placement import REPORT_TTL, Action, Board, Here, Placement, Policy
from protocols import Demand, ModelDemand

POLICY = Policy(allowed=["a", "b", "pin"], pinned=["pin"], idle_unload=60.0, wanted_for=2.0)


def waiting(queued: int = 2, oldest: float = 0.5, ready: int = 0, loading: int = 0) -> ModelDemand:
    return ModelDemand(queued, oldest, refused=0, ready=ready, loading=loading)


def ready(idle: float = 0.0, since: float = 1000.0) -> Here:
    return Here("ready", idle, since)


def test_demand_must_last_before_a_load() -> None:
    placement = Placement(POLICY)
    demand = {"a": waiting()}
    assert placement.decide(0.0, demand, {}, {}) == []
    assert placement.decide(1.9, demand, {}, {}) == []
    assert placement.decide(2.0, demand, {}, {}) == [Action("load", "a")]
    # A gap in the demand starts the count again.
    assert placement.decide(3.0, {}, {}, {}) == []
    assert placement.decide(4.0, demand, {}, {}) == []


def test_only_allowed_models_absent_here_and_loading_nowhere_are_loaded() -> None:
    placement = Placement(POLICY)
    demand = {"x": waiting(), "a": waiting(loading=1), "b": waiting()}
    placement.decide(0.0, demand, {}, {})
    assert placement.decide(5.0, demand, {"b": Here("loading", 0.0, 0.0)}, {}) == []
    assert placement.decide(5.0, demand, {}, {}) == [Action("load", "b")]


def test_a_model_served_elsewhere_is_wanted_only_once_its_calls_wait_long() -> None:
    placement = Placement(POLICY)
    keeping_up = {"a": waiting(oldest=0.1, ready=1)}
    placement.decide(0.0, keeping_up, {}, {})
    assert placement.decide(10.0, keeping_up, {}, {}) == []
    behind = {"a": waiting(oldest=3.0, ready=1)}
    placement.decide(10.0, behind, {}, {})
    assert placement.decide(12.0, behind, {}, {}) == [Action("load", "a")]
    refused = {"b": ModelDemand(0, 0.0, refused=2, ready=1, loading=0)}
    placement.decide(20.0, refused, {}, {})
    assert placement.decide(22.0, refused, {}, {}) == [Action("load", "b")]


def test_the_longest_wait_goes_first_and_one_load_runs_at_a_time() -> None:
    placement = Placement(POLICY)
    demand = {"a": waiting(oldest=1.0), "b": waiting(oldest=4.0)}
    placement.decide(0.0, demand, {}, {})
    assert placement.decide(2.0, demand, {}, {}) == [Action("load", "b")]
    assert placement.decide(2.5, demand, {"b": Here("loading", 0.0, 0.0)}, {}) == []


def test_idle_models_are_unloaded_but_not_pinned_busy_wanted_or_fresh_ones() -> None:
    placement = Placement(POLICY)
    here = {
        "a": ready(idle=61.0),
        "b": ready(idle=61.0, since=10.0),  # ready only 10 s ago
        "pin": ready(idle=500.0),
        "other": ready(idle=500.0),  # not the policy's to unload
    }
    assert placement.decide(0.0, {}, here, {}) == [Action("unload", "a")]
    assert placement.decide(0.0, {"a": waiting()}, here, {}) == []


def test_no_room_unloads_the_least_recently_used_idle_model_first() -> None:
    policy = Policy(allowed=["a", "b", "c"], idle_unload=60.0, wanted_for=1.0)
    placement = Placement(policy)
    here = {"a": ready(idle=5.0), "b": ready(idle=20.0)}
    demand = {"c": waiting()}
    placement.decide(0.0, demand, here, {"c": False})
    assert placement.decide(1.0, demand, here, {"c": False}) == [Action("unload", "b")]
    assert placement.decide(1.0, demand, {"a": ready(idle=5.0)}, {"c": True}) == [
        Action("load", "c")
    ]


def test_a_failed_load_waits_before_it_is_tried_again() -> None:
    placement = Placement(Policy(allowed=["a"], wanted_for=0.0, retry_after=30.0))
    demand = {"a": waiting()}
    assert placement.decide(0.0, demand, {}, {}) == [Action("load", "a")]
    placement.failed("a", 1.0)
    assert placement.decide(20.0, demand, {}, {}) == []
    assert placement.decide(31.0, demand, {}, {}) == [Action("load", "a")]


def test_the_board_sums_waits_over_gateways_and_forgets_silent_ones() -> None:
    board = Board()
    board.report("g1", Demand({"a": ModelDemand(2, 1.0, 0, 1, 0)}), now=0.0)
    board.report("g2", Demand({"a": ModelDemand(3, 4.0, 1, 0, 1)}), now=1.0)
    assert board.merged(1.0) == {"a": ModelDemand(5, 4.0, 1, 1, 1)}
    assert board.merged(REPORT_TTL + 0.5) == {"a": ModelDemand(3, 4.0, 1, 0, 1)}
    assert board.merged(REPORT_TTL + 2.0) == {}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"allowed": "a"}, "allowed must be a list"),
        ({"pinned": [1]}, "pinned must be a list"),
        ({"reserve_bytes": -1}, "reserve_bytes"),
        ({"idle_unload": -5}, "idle_unload"),
        ({"wanted_for": "soon"}, "wanted_for"),
        ({"unload_when": 3}, "unknown placement settings: unload_when"),
    ],
)
def test_a_bad_policy_is_refused_with_its_reason(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Policy.from_table(table)


def test_placement_is_off_unless_models_are_allowed() -> None:
    assert not Policy.from_table({}).enabled
    assert Policy.from_table({"allowed": ["a"], "idle_unload": 10}).enabled
