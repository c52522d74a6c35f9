"""Long-running background tasks that an unexpected error does not end.

A peer's discovery, advertising, watch streams and gateway-to-gateway sync run for the
peer's whole life. ``supervised`` runs one of them: an exception is logged with its
traceback and the task is started again after a backoff (0.5 s, doubling up to 30 s, from
0.5 s again once it had run a minute), while the peer keeps serving. Only a failure to
start at all (before a task that takes ``task_status`` said it started) ends the peer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

logger = logging.getLogger(__name__)

FIRST_BACKOFF = 0.5
LONGEST_BACKOFF = 30.0
HEALTHY_AFTER = 60.0


class _Started:
    """Passes ``started`` on to the caller's task status the first time only."""

    def __init__(self, outer: trio.TaskStatus[Any]) -> None:
        self._outer: trio.TaskStatus[Any] | None = outer
        self.done = False

    def started(self, value: Any = None) -> None:
        self.done = True
        outer, self._outer = self._outer, None
        if outer is not None:
            outer.started(value)


async def supervised(
    name: str,
    run: Callable[..., Awaitable[None]],
    *,
    takes_status: bool = False,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``run()`` (``run(task_status=...)`` with ``takes_status``) for ever."""
    status = _Started(task_status)
    if not takes_status:
        status.started()
    failures = 0
    while True:
        began = trio.current_time()
        try:
            if takes_status:
                await run(task_status=status)
            else:
                await run()
            problem = "returned"
        except Exception:
            if not status.done:
                raise  # it never started: the peer cannot run without it
            problem = "failed"
            logger.exception("%s failed", name)
        if trio.current_time() - began >= HEALTHY_AFTER:
            failures = 0
        wait = min(LONGEST_BACKOFF, FIRST_BACKOFF * 2**failures)
        failures += 1
        logger.warning("%s %s; starting it again in %g s", name, problem, wait)
        await trio.sleep(wait)
