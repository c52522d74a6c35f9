"""Admission and accounting of the calls to one model.

``capacity`` calls run at once; up to ``max_queue`` more wait in line, first come first
served; past that a call is refused with OVERLOADED so the gateway can try another peer at
once instead of queueing behind a busy one. Every change is told to a ``Changes`` (shared by
all the models of a node) so watchers see load move.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


class Overloaded(Exception):
    pass


class Draining(Exception):
    pass


class Changes:
    """A counter that moves whenever something worth telling watchers changes."""

    def __init__(self) -> None:
        self.version = 0
        self._changed = trio.Event()

    def bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self, seen: int) -> None:
        """Return once ``version`` differs from ``seen``."""
        while self.version == seen:
            await self._changed.wait()


class Scheduler:
    def __init__(self, capacity: int, max_queue: int, changes: Changes | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.max_queue = max_queue
        self.inflight = 0
        self.queued = 0
        self.draining = False
        self.tokens_per_s = 0.0
        self.changes = changes or Changes()
        self._waiters: deque[trio.Event] = deque()
        self._calls: set[trio.CancelScope] = set()
        self._stopped = False
        self.last_busy = time.monotonic()  # when a call last came or went

    @property
    def idle_for(self) -> float:
        """Seconds since the last call ended (0 while one runs or waits)."""
        if self.inflight or self.queued:
            return 0.0
        return time.monotonic() - self.last_busy

    @property
    def version(self) -> int:
        return self.changes.version

    def _bump(self) -> None:
        self.last_busy = time.monotonic()
        self.changes.bump()

    async def wait_changed(self, seen: int) -> None:
        await self.changes.wait_changed(seen)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the node's slots for the duration of a call.

        Calls that must wait are served first come, first served: a freed slot is handed
        to the oldest waiter, so no call can be overtaken for ever. A call ended by
        ``stop`` leaves with ``Draining``.
        """
        if self.draining:
            raise Draining("is draining on this node")
        if self.inflight >= self.capacity or self._waiters:
            if self.queued >= self.max_queue:
                raise Overloaded(f"full ({self.inflight} running, {self.queued} queued)")
            turn = trio.Event()
            self._waiters.append(turn)
            self.queued += 1
            self._bump()
            try:
                await turn.wait()
            except BaseException:
                if turn.is_set():  # handed a slot just as it gave up: pass it on
                    self.inflight -= 1
                    self._hand_over()
                else:
                    self._waiters.remove(turn)
                self.queued -= 1
                self._bump()
                raise
            self.queued -= 1
        else:
            self.inflight += 1
        self._bump()
        try:
            if self._stopped:  # woken by ``stop``, not given a model to run on
                raise Draining("was unloaded before the call's turn")
            with trio.CancelScope() as call:
                self._calls.add(call)
                try:
                    yield
                finally:
                    self._calls.discard(call)
            if call.cancelled_caught:
                raise Draining("was unloaded while the call ran")
        finally:
            self.inflight -= 1
            self._hand_over()
            self._bump()

    def _hand_over(self) -> None:
        """Give free slots to the oldest waiters (they count as running from now)."""
        while self._waiters and self.inflight < self.capacity:
            self.inflight += 1
            self._waiters.popleft().set()

    def record_speed(self, tokens: int, seconds: float) -> None:
        """Fold one call's decode speed into an exponentially weighted average."""
        if tokens <= 0 or seconds <= 0:
            return
        rate = tokens / seconds
        self.tokens_per_s = rate if self.tokens_per_s == 0 else 0.8 * self.tokens_per_s + 0.2 * rate

    def set_capacity(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._hand_over()
        self._bump()

    def stop(self) -> None:
        """Cancel every call running, and refuse every call waiting, with ``Draining``."""
        self.draining = self._stopped = True
        for call in self._calls:
            call.cancel()
        self._hand_over_all()
        self._bump()

    def _hand_over_all(self) -> None:
        while self._waiters:
            self.inflight += 1
            self._waiters.popleft().set()

    def drain(self) -> None:
        self.draining = True
        self._bump()

    async def wait_idle(self) -> None:
        """Return once no call is running or queued."""
        while self.inflight or self.queued:
            await self.wait_changed(self.version)
