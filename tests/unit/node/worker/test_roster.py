"""A node's models: their states, their own slots, and the load the node advertises."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from node.worker.roster import Busy, Roster
from node.worker.runners.echo import EchoRunner
from protocols import Load, ModelInfo
from protocols.operator import ModelSpec


class Fast(EchoRunner):
    """An echo runner that measured its own batch speed."""

    @property
    def tokens_per_s(self) -> float:
        return 120.0


def test_a_model_goes_from_loading_to_ready_and_is_advertised_so() -> None:
    roster = Roster(max_queue=4)
    roster.begin(ModelSpec("m", "float16", 6), "text-generation")
    assert [h.info for h in roster] == [
        ModelInfo("m", "text-generation", "float16", 0, 6, "loading")
    ]
    assert roster.load(5).capacity == 0  # nothing to route to yet
    roster.ready("m", EchoRunner("m", max_batch=6))
    (held,) = roster
    assert held.info.state == "ready"
    assert held.scheduler is not None and held.scheduler.capacity == 6
    assert roster.load(5) == Load(0, 0, 6, 0.0, 5, False)


def test_a_failed_model_says_why_and_can_be_tried_again() -> None:
    roster = Roster(max_queue=4)
    roster.begin(ModelSpec("m"), "text-generation")
    with pytest.raises(Busy, match="m is already loading on this node"):
        roster.begin(ModelSpec("m"), "text-generation")
    roster.failed("m", "no such model")
    held = roster.get("m")
    assert held is not None and (held.info.state, held.reason) == ("failed", "no such model")
    roster.begin(ModelSpec("m"), "text-generation")  # a retry is allowed
    roster.ready("m", EchoRunner("m"))
    with pytest.raises(Busy, match="m is already ready on this node"):
        roster.begin(ModelSpec("m"), "text-generation")


def test_the_node_load_sums_ready_models_and_their_measured_speed() -> None:
    roster = Roster.of({"a": Fast("a", max_batch=4), "b": EchoRunner("b", max_batch=2)}, 0, 8)
    b = roster.get("b")
    assert b is not None and b.scheduler is not None
    b.scheduler.record_speed(30, 1.0)  # no measure of its own: the calls' speed counts
    assert roster.load(0) == Load(0, 0, 6, 150.0, 0, False)
    roster.drain_model("a")
    load = roster.load(0)
    assert (load.capacity, load.draining) == (2, False)  # a draining model takes no calls
    assert [h.info.state for h in roster] == ["draining", "ready"]
    roster.remove("a")
    assert [h.spec.id for h in roster] == ["b"]


def test_a_node_wide_capacity_caps_every_model() -> None:
    roster = Roster.of({"a": EchoRunner("a", max_batch=8)}, capacity=3, max_queue=1)
    assert roster.load(0).capacity == 3


async def test_one_model_full_does_not_hold_up_another() -> None:
    roster = Roster.of({"a": EchoRunner("a"), "b": EchoRunner("b")}, capacity=1, max_queue=4)
    a, b = roster.get("a"), roster.get("b")
    assert a is not None and a.scheduler is not None and b is not None and b.scheduler is not None
    release = trio.Event()

    async def hold_a() -> None:
        assert a.scheduler is not None
        async with a.scheduler.slot():
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold_a)
        nursery.start_soon(hold_a)
        await trio.testing.wait_all_tasks_blocked()
        assert (roster.inflight, roster.queued) == (1, 1)
        with trio.fail_after(1):
            async with b.scheduler.slot():  # b has its own free slot
                assert roster.inflight == 2
        release.set()
    assert (roster.inflight, roster.queued) == (0, 0)


async def test_draining_the_node_drains_every_model_and_waits_for_their_calls() -> None:
    roster = Roster.of({"a": EchoRunner("a"), "b": EchoRunner("b")}, capacity=1, max_queue=4)
    a = roster.get("a")
    assert a is not None and a.scheduler is not None
    done = trio.Event()

    async def call() -> None:
        assert a.scheduler is not None
        async with a.scheduler.slot():
            await done.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        seen = roster.version
        roster.drain()
        assert roster.version != seen
        assert roster.load(0).draining
        assert {h.info.state for h in roster} == {"draining"}
        with trio.move_on_after(0.1) as waited:
            await roster.wait_idle()
        assert waited.cancelled_caught  # a's call is still running
        done.set()
        with trio.fail_after(1):
            await roster.wait_idle()
