"""The gateway's peer table: ranking, health, freshness, and the dispatcher's use of the
ranking. Pure: times are passed in."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.routing.peer_table import SLOT_SECONDS, SUSPECT_AFTER, PeerEntry, PeerTable
from protocols import Hardware, Load, ModelInfo, NodeRecord

T0 = 1_000_000.0


def load(
    inflight: int = 0,
    queued: int = 0,
    capacity: int = 1,
    tokens_per_s: float = 0.0,
    draining: bool = False,
) -> Load:
    return Load(inflight, queued, capacity, tokens_per_s, memory_free=0, draining=draining)


def record(
    peer: str,
    models: dict[str, str] | None = None,
    seq: int = 1,
    issued_at: float = T0,
    ttl: float = 60.0,
    load_: Load | None = None,
    task: str = "text-generation",
) -> NodeRecord:
    states = {"m": "ready"} if models is None else models
    return NodeRecord(
        peer_id=peer,
        public_key=b"\x00" * 32,
        role="node",
        version="0.1.0",
        addrs=[],
        hardware=Hardware("cpu", "test", "RAM", 0, 0),
        models=[ModelInfo(m, task, "float32", 2048, 1, s) for m, s in states.items()],
        load=load_ or load(),
        seq=seq,
        issued_at=issued_at,
        ttl=ttl,
    )


def live(
    table: PeerTable,
    peer: str,
    load_: Load,
    *,
    models: dict[str, str] | None = None,
    seq: int = 1,
    ttl: float = 60.0,
) -> PeerEntry:
    """Add a node and give it a fresh load update, as a connected tracker would."""
    entry = table.upsert(record(peer, models, seq=seq, ttl=ttl), now=T0)
    table.update_load(peer, load_, now=T0)
    return entry


def ranked(
    table: PeerTable, model: str = "m", now: float = T0, exclude: frozenset[str] = frozenset()
) -> list[str]:
    return [e.peer_id for e in table.candidates(model, now, exclude)]


def test_new_entry_takes_the_record_load_and_is_not_connected() -> None:
    table = PeerTable()
    entry = table.upsert(record("a", load_=load(inflight=2)), now=T0)
    assert entry.load == load(inflight=2)
    assert (entry.last_seen, entry.connected, entry.local_delta) == (T0, False, 0)
    assert entry.peer_id == "a"


def test_ranking_by_work_ahead_per_slot() -> None:
    table = PeerTable()
    live(table, "busy", load(inflight=3, capacity=2))  # (3 + 1) / 2 = 2
    live(table, "idle", load(capacity=1))  # 1 / 1 = 1
    live(table, "queued", load(inflight=1, queued=4, capacity=2))  # 6 / 2 = 3
    live(table, "wide", load(inflight=2, capacity=8))  # 3 / 8
    assert ranked(table) == ["wide", "idle", "busy", "queued"]


def test_expected_wait_formula() -> None:
    table = PeerTable()
    entry = live(table, "a", load(inflight=2, queued=1, capacity=2, tokens_per_s=100.0))
    entry.local_delta = 1
    assert entry.expected_wait(0.5) == pytest.approx((2 + 1 + 1 + 1) / 2 * 0.5)
    # Untimed anywhere: the node's claimed speed (100 tokens/s) halves the guess.
    assert entry.call_seconds("m", None) == pytest.approx(SLOT_SECONDS / 2.0)


def test_zero_capacity_counts_as_one_slot() -> None:
    table = PeerTable()
    entry = live(table, "a", load(inflight=1, capacity=0))
    assert entry.expected_wait(1.0) == pytest.approx(2.0)


def test_faster_node_wins_at_equal_load() -> None:
    table = PeerTable()
    live(table, "slow", load(inflight=1, capacity=1, tokens_per_s=10.0))
    live(table, "fast", load(inflight=1, capacity=1, tokens_per_s=200.0))
    assert ranked(table) == ["fast", "slow"]


def test_local_delta_counts_calls_started_since_the_last_update() -> None:
    table = PeerTable()
    a = live(table, "a", load(capacity=1))
    live(table, "b", load(inflight=1, capacity=1))
    assert ranked(table) == ["a", "b"]
    a.local_delta += 2  # two calls sent to a since its last load update
    assert ranked(table) == ["b", "a"]


def test_negative_local_delta_never_makes_work_negative() -> None:
    table = PeerTable()
    a = live(table, "a", load(capacity=1))
    a.local_delta = -5
    assert a.expected_wait(1.0) == pytest.approx(1.0)


def test_load_update_resets_local_delta_and_marks_seen() -> None:
    table = PeerTable()
    entry = live(table, "a", load())
    entry.local_delta = 3
    table.update_load("a", load(inflight=3), now=T0 + 2)
    assert entry.local_delta == 0
    assert entry.load == load(inflight=3)
    assert entry.last_seen == T0 + 2
    assert entry.connected


def test_load_update_for_unknown_peer_is_ignored() -> None:
    table = PeerTable()
    table.update_load("ghost", load(), now=T0)
    assert table.entries == {}


def test_ties_break_on_rtt_then_peer_id() -> None:
    table = PeerTable()
    live(table, "c", load())
    live(table, "b", load())
    live(table, "a", load()).rtt = 0.5
    assert ranked(table) == ["b", "c", "a"]


def test_a_near_idle_node_ranks_before_a_far_idle_one_but_not_before_a_busy_one() -> None:
    table = PeerTable()
    far = live(table, "far", load(capacity=4))
    far.rtt = 0.100
    near = live(table, "near", load(capacity=4))
    near.rtt = 0.001
    assert ranked(table) == ["near", "far"]
    assert far.rank("m") == pytest.approx(far.expected_wait(SLOT_SECONDS) + 0.100)
    near.local_delta = 1  # one call ahead on the near node: a quarter of a slot
    assert ranked(table) == ["far", "near"]


def test_timed_calls_rank_a_node_whatever_speed_it_claims() -> None:
    table = PeerTable()
    boaster = live(table, "boaster", load(capacity=1, tokens_per_s=400.0))
    modest = live(table, "modest", load(capacity=1, tokens_per_s=10.0))
    assert ranked(table) == ["boaster", "modest"]
    boaster.note_held("m", 0.300)
    modest.note_held("m", 0.100)
    assert ranked(table) == ["modest", "boaster"]
    # A node three times faster keeps taking calls until three are ahead of the next one.
    modest.local_delta = 1
    assert ranked(table) == ["modest", "boaster"]
    modest.local_delta = 3
    assert ranked(table) == ["boaster", "modest"]


def test_an_untimed_node_is_ranked_as_the_fastest_timed_one_so_it_gets_tried() -> None:
    table = PeerTable()
    fast = live(table, "fast", load(capacity=1))
    fast.note_held("m", 0.1)
    live(table, "new", load(capacity=1))  # its own guess would be 2 s a call
    assert ranked(table) == ["fast", "new"]  # 0.1 s each: a tie, broken by name
    fast.local_delta = 1
    assert ranked(table) == ["new", "fast"]  # 0.1 s against 2 x 0.1 s
    fast.note_held("m", 0.6)
    assert fast.held["m"] == pytest.approx(0.1 + 0.2 * (0.6 - 0.1))  # a moving average


def test_draining_node_is_excluded() -> None:
    table = PeerTable()
    live(table, "a", load(draining=True))
    live(table, "b", load(inflight=5))
    assert ranked(table) == ["b"]


def test_node_without_a_load_update_is_suspect() -> None:
    table = PeerTable()
    table.upsert(record("a"), now=T0)
    assert ranked(table) == []


def test_node_silent_past_suspect_after_is_excluded() -> None:
    table = PeerTable()
    entry = live(table, "a", load())
    assert ranked(table, now=T0 + SUSPECT_AFTER) == ["a"]
    assert ranked(table, now=T0 + SUSPECT_AFTER + 0.01) == []
    assert entry.suspect(T0 + SUSPECT_AFTER + 0.01)
    table.update_load("a", load(), now=T0 + 10)
    assert ranked(table, now=T0 + 10) == ["a"]


def test_disconnected_node_is_excluded_even_when_fresh() -> None:
    table = PeerTable()
    live(table, "a", load()).connected = False
    assert ranked(table) == []


def test_exclude_set_is_honoured() -> None:
    table = PeerTable()
    for peer in ("a", "b", "c"):
        live(table, peer, load())
    assert ranked(table, exclude=frozenset({"a", "c"})) == ["b"]
    assert [e.peer_id for e in table.candidates("m", T0, {"b"})] == ["a", "c"]


@pytest.mark.parametrize("state", ["loading", "draining"])
def test_model_not_ready_is_excluded(state: str) -> None:
    table = PeerTable()
    live(table, "a", load(), models={"m": state, "other": "ready"})
    live(table, "b", load(inflight=9), models={"m": "ready"})
    assert ranked(table) == ["b"]
    assert ranked(table, "other") == ["a"]


def test_unknown_model_has_no_candidates() -> None:
    table = PeerTable()
    live(table, "a", load())
    assert ranked(table, "nope") == []


def test_models_lists_every_advertised_model_whatever_its_state() -> None:
    table = PeerTable()
    live(table, "a", load(), models={"m": "ready", "x": "loading"})
    live(table, "b", load(), models={"m": "ready"})
    found = {model: sorted(e.peer_id for e in entries) for model, entries in table.models().items()}
    assert found == {"m": ["a", "b"], "x": ["a"]}


def test_upsert_never_goes_back_to_an_older_seq() -> None:
    table = PeerTable()
    entry = live(table, "a", load(), seq=5)
    table.upsert(record("a", seq=4, models={"old": "ready"}), now=T0 + 1)
    assert entry.record.seq == 5
    assert [m.id for m in entry.record.models] == ["m"]
    newer = record("a", seq=6, models={"new": "ready"})
    assert table.upsert(newer, now=T0 + 1) is entry
    assert entry.record == newer


def test_upsert_keeps_live_load_and_health() -> None:
    table = PeerTable()
    entry = live(table, "a", load(inflight=2))
    entry.local_delta = 1
    table.upsert(record("a", seq=2, load_=load(inflight=9)), now=T0 + 1)
    assert entry.load == load(inflight=2)
    assert (entry.connected, entry.last_seen, entry.local_delta) == (True, T0, 1)


def test_expire_drops_records_past_their_ttl() -> None:
    table = PeerTable()
    live(table, "short", load(), ttl=10)
    live(table, "long", load(), ttl=100)
    assert table.expire(T0 + 10) == []
    assert table.expire(T0 + 10.5) == ["short"]
    assert set(table.entries) == {"long"}
    assert table.expire(T0 + 101) == ["long"]
    assert table.entries == {}


def test_refreshed_record_extends_life() -> None:
    table = PeerTable()
    entry = live(table, "a", load(), ttl=10)
    table.upsert(replace(entry.record, seq=2, issued_at=T0 + 8), now=T0 + 8)
    assert table.expire(T0 + 15) == []


def test_remove_is_idempotent() -> None:
    table = PeerTable()
    live(table, "a", load())
    table.remove("a")
    table.remove("a")
    assert table.entries == {}


@pytest.mark.parametrize(("wait_for_best", "second_goes_to"), [(True, "fast"), (False, "slow")])
async def test_a_call_waits_for_the_node_where_it_ends_first_rather_than_take_a_slower_one(
    wait_for_best: bool, second_goes_to: str
) -> None:
    from gateway.routing.dispatch import Dispatcher, Wait

    table = PeerTable()
    fast = live(table, "fast", load(capacity=1))
    fast.note_held("m", 0.04)
    live(table, "slow", load(capacity=1)).note_held("m", 0.12)
    dispatcher = Dispatcher(
        table, lambda e: True, wall=lambda: T0, node_queue=0, wait_for_best=wait_for_best
    )
    first = dispatcher.ask("m", Wait("ann"))
    assert first.peer == "fast"
    # Full, but a call there ends at 2 x 40 ms, before one on the idle slow node (120 ms).
    second = dispatcher.ask("m", Wait("bob"))
    if wait_for_best:
        assert second.peer is None and dispatcher.queue.waiting("m") == 1
        dispatcher.release(first, served=True)  # its first call ends: the second goes there
    assert second.peer == second_goes_to
