"""The node's slots: first come first served, a bounded line, nothing lost to cancellation."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from node.worker.scheduler import Draining, Overloaded, Scheduler


async def hold(scheduler: Scheduler, name: str, order: list[str], release: trio.Event) -> None:
    async with scheduler.slot():
        order.append(name)
        await release.wait()


async def test_waiting_calls_get_slots_in_arrival_order() -> None:
    scheduler = Scheduler(1, 10)
    order: list[str] = []
    releases = {name: trio.Event() for name in "abcdef"}
    async with trio.open_nursery() as nursery:
        for name in "abcdef":
            nursery.start_soon(hold, scheduler, name, order, releases[name])
            await trio.testing.wait_all_tasks_blocked()
        assert (scheduler.inflight, scheduler.queued) == (1, 5)
        for name in "abcdef":
            releases[name].set()
            await trio.testing.wait_all_tasks_blocked()
    assert order == list("abcdef")
    assert (scheduler.inflight, scheduler.queued) == (0, 0)


async def test_a_newcomer_does_not_overtake_the_line() -> None:
    scheduler = Scheduler(1, 10)
    order: list[str] = []
    first, second, late = trio.Event(), trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, scheduler, "first", order, first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(hold, scheduler, "second", order, second)
        await trio.testing.wait_all_tasks_blocked()
        first.set()  # the slot goes to "second" before "late" even asks
        nursery.start_soon(hold, scheduler, "late", order, late)
        await trio.testing.wait_all_tasks_blocked()
        second.set()
        late.set()
    assert order == ["first", "second", "late"]


async def test_the_line_is_bounded() -> None:
    scheduler = Scheduler(1, 1)
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, scheduler, "a", [], release)
        nursery.start_soon(hold, scheduler, "b", [], release)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(Overloaded, match="1 running, 1 queued"):
            async with scheduler.slot():
                pass
        release.set()


async def test_a_waiter_that_gives_up_keeps_no_slot() -> None:
    scheduler = Scheduler(1, 10)
    order: list[str] = []
    release, never = trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, scheduler, "a", order, release)
        await trio.testing.wait_all_tasks_blocked()
        async with trio.open_nursery() as quitters:
            quitters.start_soon(hold, scheduler, "gone", order, never)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(hold, scheduler, "b", order, never)
            await trio.testing.wait_all_tasks_blocked()
            assert scheduler.queued == 2
            quitters.cancel_scope.cancel()  # "gone" leaves the line before its turn
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["a", "b"]
        assert (scheduler.inflight, scheduler.queued) == (1, 0)
        never.set()
    assert scheduler.inflight == 0


async def test_a_draining_node_takes_no_new_calls() -> None:
    scheduler = Scheduler(2, 2)
    scheduler.drain()
    with pytest.raises(Draining):
        async with scheduler.slot():
            pass


async def test_more_capacity_lets_waiters_in_at_once() -> None:
    scheduler = Scheduler(1, 10)
    order: list[str] = []
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        for name in "abc":
            nursery.start_soon(hold, scheduler, name, order, release)
            await trio.testing.wait_all_tasks_blocked()
        scheduler.set_capacity(3)
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(order) == ["a", "b", "c"] and scheduler.inflight == 3
        release.set()


async def test_stop_cancels_running_calls_and_refuses_waiting_ones() -> None:
    scheduler = Scheduler(1, 10)
    outcomes: list[str] = []

    async def call(name: str) -> None:
        try:
            async with scheduler.slot():
                outcomes.append(f"{name} runs")
                await trio.sleep_forever()
        except Draining as exc:
            outcomes.append(f"{name}: {exc}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "a")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call, "b")
        await trio.testing.wait_all_tasks_blocked()
        scheduler.stop()
    assert sorted(outcomes) == [
        "a runs",
        "a: was unloaded while the call ran",
        "b: was unloaded before the call's turn",
    ]
    assert (scheduler.inflight, scheduler.queued) == (0, 0)
    with pytest.raises(Draining):
        async with scheduler.slot():
            pass
