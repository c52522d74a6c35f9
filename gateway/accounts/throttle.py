"""Sign-in guards: how often a client address and a user name may try to log in or
register, and how much password hashing may run at once.

scrypt is slow and memory-hungry on purpose (about 128 MiB and a few hundred
milliseconds per hash at OWASP's cost). Without a bound a flood of logins guesses
passwords as fast as the hardware allows, and queues hashes until worker threads and
memory run out; with one, the excess is told to come back later, at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import ParamSpec, TypeVar

import trio

from gateway.accounts.errors import Busy, LimitReached

P = ParamSpec("P")
T = TypeVar("T")

MAX_KEYS = 100_000  # buckets remembered; each is a few dozen bytes


class Buckets:
    """A token bucket per key: ``per_minute`` attempts a minute, bursting to that many.

    At most ``max_keys`` buckets are kept; the least recently used goes first (it has
    had the longest to refill), so many names or addresses cannot grow memory.
    """

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        if per_minute < 1:
            raise ValueError("a sign-in rate must be at least 1 a minute")
        self._capacity = float(per_minute)
        self._per_second = per_minute / 60.0
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (level, when), LRU order

    def take(self, key: str) -> float:
        """Spend one attempt for ``key``: 0 when allowed, else the seconds until one is."""
        now = self._clock()
        level, at = self._buckets.pop(key, (self._capacity, now))
        level = min(self._capacity, level + (now - at) * self._per_second)
        allowed = level >= 1
        self._buckets[key] = (level - 1 if allowed else level, now)
        if len(self._buckets) > self._max_keys:
            del self._buckets[next(iter(self._buckets))]
        return 0.0 if allowed else (1 - level) / self._per_second


class SignInThrottle:
    """Login and registration attempts per client address and per user name."""

    def __init__(
        self,
        per_address: int = 20,
        per_user: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._addresses = Buckets(per_address, clock)
        self._users = Buckets(per_user, clock)

    def check(self, address: str | None, user: str) -> None:
        """Count an attempt; ``LimitReached`` (429) when either has tried too often."""
        wait = self._addresses.take(address) if address else 0.0
        if not wait:
            wait = self._users.take(user.casefold())
        if wait:
            retry = max(1, math.ceil(wait))
            message = f"too many sign-in attempts: try again in {retry} s"
            raise LimitReached(message, "too_many_attempts", retry, {})


class PasswordWork:
    """Runs password hashing on at most ``concurrent`` worker threads, with at most
    ``waiting`` more calls queued; past that, ``Busy`` (503) at once."""

    def __init__(self, concurrent: int = 2, waiting: int | None = None) -> None:
        if concurrent < 1:
            raise ValueError("password hashing needs at least one thread")
        self._limiter = trio.CapacityLimiter(concurrent)
        self._most = concurrent + (4 * concurrent if waiting is None else waiting)
        self._in = 0

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._in >= self._most:
            raise Busy("the gateway is busy checking passwords: try again", "busy", 1)
        self._in += 1
        try:
            call = partial(fn, *args, **kwargs)
            return await trio.to_thread.run_sync(call, limiter=self._limiter)
        finally:
            self._in -= 1
