"""Supervised background tasks: an error is logged with its traceback and the task runs
again after a backoff; only a task that never started ends the peer."""

from __future__ import annotations

import itertools
import logging
from functools import partial

import pytest
import trio
import trio.testing

from node.p2p.tasks import HEALTHY_AFTER, LONGEST_BACKOFF, supervised


async def test_a_failing_task_is_started_again_with_a_growing_wait(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    starts: list[float] = []

    async def flaky() -> None:
        starts.append(trio.current_time())
        if len(starts) < 9:
            raise RuntimeError(f"boom {len(starts)}")
        await trio.sleep_forever()

    with trio.move_on_after(1000):
        await supervised("flaky", flaky)
    waits = [round(b - a, 2) for a, b in itertools.pairwise(starts)]
    assert waits == [0.5, 1, 2, 4, 8, 16, LONGEST_BACKOFF, LONGEST_BACKOFF]
    failures = [r for r in caplog.records if r.getMessage() == "flaky failed"]
    assert len(failures) == 8 and all(r.exc_info for r in failures)  # with the traceback
    assert "flaky failed; starting it again in 0.5 s" in caplog.text


async def test_the_wait_starts_over_after_a_healthy_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []

    async def sometimes() -> None:
        starts.append(trio.current_time())
        if len(starts) in (3, 4):
            await trio.sleep(HEALTHY_AFTER)  # a long good run before it fails
        raise RuntimeError("boom")

    with trio.move_on_after(HEALTHY_AFTER * 2 + 5):
        await supervised("sometimes", sometimes)
    waits = [round(b - a, 2) for a, b in itertools.pairwise(starts)]
    assert waits[:5] == [0.5, 1, 0.5 + HEALTHY_AFTER, 0.5 + HEALTHY_AFTER, 1]


async def test_a_task_that_never_started_ends_the_peer() -> None:
    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise OSError("cannot bind")

    async with trio.open_nursery() as nursery:
        with pytest.raises(OSError, match="cannot bind"):
            await nursery.start(partial(supervised, "broken", broken, takes_status=True))


async def test_after_it_started_a_task_with_a_status_is_supervised_too(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    runs = 0

    async def server(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        task_status.started("listening")
        if runs < 3:
            raise ConnectionError("stream lost")
        await trio.sleep_forever()

    caplog.set_level(logging.WARNING)
    async with trio.open_nursery() as nursery:
        assert (
            await nursery.start(partial(supervised, "server", server, takes_status=True))
            == "listening"
        )
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert runs == 3
    assert "server failed; starting it again in 1 s" in caplog.text


async def test_a_task_that_returns_is_started_again(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    runs = 0

    async def quits() -> None:
        nonlocal runs
        runs += 1

    with trio.move_on_after(2):
        await supervised("quits", quits)
    assert runs == 3  # at 0, 0.5 and 1.5 s
    assert "quits returned; starting it again in 0.5 s" in caplog.text
