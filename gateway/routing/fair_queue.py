"""The calls waiting for a model, in the order they will be served. No I/O, no clock.

Higher priority classes go first. Within a class, users take turns (round-robin): each
user's calls wait first come, first served, and a user with a burst of calls waits behind
one call of every other user per turn, so nobody's burst starves anyone. A user who starts
waiting joins the turn order by when they were last served, not at its back: one who was
not served lately goes before the user with the burst, so a single call waits for at most
one call ahead of it, not one of the burst's too. The queue is bounded per user and in
total: past either bound a call is refused (``QueueFull``).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

# Users whose last turn is remembered, per queue: past this the longest ago are forgotten
# (and count as never served, which changes nothing for them).
SERVED_KEPT = 4096


class QueueFull(Exception):
    """The call cannot wait: the user, or everyone together, has as many waiting as allowed."""


@dataclass(eq=False)
class Waiter:
    """One call waiting (identity matters: two calls alike are still two calls)."""

    model: str
    user: str
    priority: int
    since: float  # when it started waiting, on the caller's clock


@dataclass
class _Class:
    """One priority class of one model: each user's calls, users in turn order."""

    users: dict[str, deque[Waiter]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(calls) for calls in self.users.values())


class FairQueue:
    def __init__(self, max_total: int, max_per_user: int) -> None:
        if max_total < 1 or max_per_user < 1:
            raise ValueError("queue bounds must be at least 1")
        self.max_total = max_total
        self.max_per_user = max_per_user
        self._models: dict[str, dict[int, _Class]] = {}
        self._per_user: dict[str, int] = {}
        self._total = 0
        self._turns = itertools.count(1)
        self._served: dict[tuple[str, str], int] = {}  # (model, user) → their last turn

    def __len__(self) -> int:
        return self._total

    def waiting(self, model: str) -> int:
        return sum(len(c) for c in self._models.get(model, {}).values())

    def models(self) -> list[str]:
        return list(self._models)

    def oldest(self, model: str) -> float | None:
        """When the longest-waiting call for ``model`` started waiting."""
        times = [
            calls[0].since
            for c in self._models.get(model, {}).values()
            for calls in c.users.values()
        ]
        return min(times, default=None)

    def push(self, waiter: Waiter, front: bool = False) -> None:
        """Queue ``waiter`` at the back of its user's line (``front``: first of all in its
        class, for a call that was sent and bounced back); ``QueueFull`` past a bound."""
        if not front:
            if self._total >= self.max_total:
                raise QueueFull(f"the queue is full ({self.max_total} calls waiting)")
            if self._per_user.get(waiter.user, 0) >= self.max_per_user:
                raise QueueFull(f"you have {self.max_per_user} calls waiting already")
        users = (
            self._models.setdefault(waiter.model, {}).setdefault(waiter.priority, _Class()).users
        )
        line = users.get(waiter.user)
        if line is None:
            line = deque()
            self._join(users, waiter.model, waiter.user, line)
        if front:
            # It had its turn already: it takes it again, before every other user.
            line.appendleft(waiter)
            rest = {u: calls for u, calls in users.items() if u != waiter.user}
            users.clear()
            users.update({waiter.user: line} | rest)
        else:
            line.append(waiter)
        self._per_user[waiter.user] = self._per_user.get(waiter.user, 0) + 1
        self._total += 1

    def pop(self, model: str) -> Waiter | None:
        """The next call to serve for ``model``: the first of the user whose turn it is in
        the highest class; that user's turn then passes to the next."""
        classes = self._models.get(model)
        if not classes:
            return None
        top = max(classes)
        users = classes[top].users
        user = next(iter(users))
        calls = users.pop(user)
        waiter = calls.popleft()
        if calls:
            users[user] = calls  # to the back of the turn order
        self._served.pop((model, user), None)
        self._served[(model, user)] = next(self._turns)
        if len(self._served) > SERVED_KEPT:
            del self._served[next(iter(self._served))]  # the longest ago
        self._forget(waiter)
        return waiter

    def _join(
        self, users: dict[str, deque[Waiter]], model: str, user: str, line: deque[Waiter]
    ) -> None:
        """Put ``user``'s new line in the turn order before every user served since them
        (the order is by last turn: the user just served is at the back)."""
        last = self._served.get((model, user), 0)
        order = list(users.items())
        at = next(
            (i for i, (u, _) in enumerate(order) if self._served.get((model, u), 0) > last),
            len(order),
        )
        order.insert(at, (user, line))
        users.clear()
        users.update(order)

    def remove(self, waiter: Waiter) -> bool:
        """Take ``waiter`` out (it gave up); False if it was not waiting."""
        line = self._models.get(waiter.model, {}).get(waiter.priority, _Class())
        calls = line.users.get(waiter.user)
        if calls is None or waiter not in calls:
            return False
        calls.remove(waiter)
        if not calls:
            del line.users[waiter.user]
        self._forget(waiter)
        return True

    def position(self, waiter: Waiter) -> int:
        """How many calls for the same model will be served before ``waiter``."""
        classes = self._models.get(waiter.model, {})
        ahead = sum(len(c) for p, c in classes.items() if p > waiter.priority)
        users = classes[waiter.priority].users
        index = users[waiter.user].index(waiter)
        # Each turn serves one call of every user with calls left: the users before this
        # one in turn order serve index + 1 calls before it, the others index.
        before = True
        for user, calls in users.items():
            if user == waiter.user:
                before = False
                continue
            ahead += min(len(calls), index + 1 if before else index)
        return ahead + index

    def _forget(self, waiter: Waiter) -> None:
        self._total -= 1
        left = self._per_user[waiter.user] - 1
        if left:
            self._per_user[waiter.user] = left
        else:
            del self._per_user[waiter.user]
        classes = self._models[waiter.model]
        if not classes[waiter.priority].users:
            del classes[waiter.priority]
        if not classes:
            del self._models[waiter.model]
