"""Calls that find no node free wait here, fairly, and go to the first node that frees a slot.

A call asks for a ``Ticket``. If nothing is waiting for its model and a node has room (free
slots plus a little of its own short queue, ``PeerEntry.room``), the ticket is granted at
once. Otherwise it waits in the ``FairQueue``: each time the peer table changes (a node's
load update says a slot freed, a node joined or loaded the model) or a call of this gateway
ends, the queue is pumped and the next calls in fair order are granted to nodes with room.

Its estimated wait (ETA) is the calls ahead of it in this queue, plus itself, over the rate
at which the model's calls end: each that ends frees a place for the next. The rate is
measured on this gateway's recent calls, and is at least the model's slots over the time a
call holds one (the rate of an idle swarm, before a backlog has been measured). A call
whose ETA is past its caller's limit is refused at once, with that estimate for
Retry-After; one that waits past its limit anyway gives up then.

Error tree::

    Refused              the call cannot wait: ``retry_after`` (seconds) says when to retry
    ├── TooLong          its estimated (or actual) wait is past the caller's limit
    └── Full             too many calls wait already (``FairQueue``'s bounds)
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from gateway.routing.fair_queue import FairQueue, QueueFull, Waiter
from gateway.routing.peer_table import PeerEntry, PeerTable
from protocols import ModelDemand

# A model no node serves yet but one may load: how long its first call is told to expect.
LOAD_GUESS = 15.0
# Before any call of a model has been timed here, a call is taken to hold a slot for its
# tokens at the speed its nodes report per slot; this long when they report none.
FIRST_GUESS = 1.0
REPORT_EVERY = 1.0  # a waiting call hears its position at least this often
REFUSALS_KEPT = 10.0  # seconds refusals count as demand
# The rate calls end at is measured on at most this many of the last calls, in this window.
ENDS_KEPT = 64
RATE_WINDOW = 10.0


class Refused(Exception):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooLong(Refused):
    pass


class Full(Refused):
    pass


@dataclass(frozen=True)
class Wait:
    """Who is asking and how long they will wait (seconds)."""

    user: str = ""
    priority: int = 0
    max_wait: float = 60.0
    tokens: int = 0  # the most the call may write, where it says (text): sizes the first ETA


# What a waiting call is told: its position (0: next) and ETA in seconds.
Report = Callable[[int, float], Awaitable[None]]


@dataclass(eq=False)
class Ticket:
    waiter: Waiter
    max_wait: float
    granted: trio.Event = field(default_factory=trio.Event)
    peer: str | None = None
    dispatched_at: float | None = None
    eta: float = 0.0  # the estimate when it started waiting
    # Nodes that failed this call before answering: it goes elsewhere if it can.
    avoid: set[str] = field(default_factory=set)
    turn: int = 0  # calls asked before it (round-robin routing takes nodes in turn)
    tokens: int = 0  # the most it may write (``Wait.tokens``)

    @property
    def model(self) -> str:
        return self.waiter.model

    @property
    def waited(self) -> float:
        """Seconds from asking to being sent (so far, if not sent yet)."""
        end = self.dispatched_at if self.dispatched_at is not None else trio.current_time()
        return max(0.0, end - self.waiter.since)


class Dispatcher:
    def __init__(
        self,
        table: PeerTable,
        usable: Callable[[PeerEntry], bool],
        order: Callable[[list[PeerEntry], int], list[PeerEntry]] = lambda entries, turn: entries,
        *,
        wall: Callable[[], float] = time.time,
        node_queue: int = 2,
        max_total: int = 1024,
        max_per_user: int = 64,
        wait_for_best: bool = False,
    ) -> None:
        self.table = table
        # Whether the order is by when a call would end: then a call waits for the first
        # node rather than take a later one that has room (round-robin and random take any).
        self.wait_for_best = wait_for_best
        self._usable = usable  # connected, and routable by this gateway
        self._order = order  # the routing policy: nodes in the order to try, for a call's turn
        self._asked = 0
        self._wall = wall  # the clock node records and load updates are stamped with
        self.node_queue = node_queue
        self.queue = FairQueue(max_total, max_per_user)
        # Waiting tickets wait for their own grant; the queue is pumped where room appears
        # (a load update, a call that ends), so a long queue costs nothing per change.
        self._tickets: dict[Waiter, Ticket] = {}
        self._hold: dict[str, float] = {}  # model → seconds a call holds a slot (EWMA)
        self._ends: dict[str, deque[float]] = {}  # model → when its last calls ended
        self._refusals: dict[str, list[float]] = {}

    # Asking and waiting.

    def ask(self, model: str, wait: Wait) -> Ticket:
        """A ticket for one call of ``model``: granted now if a node has room and no call
        waits before it, else queued; ``Refused`` if it cannot wait that long or at all."""
        waiter = Waiter(model, wait.user, wait.priority, trio.current_time())
        ticket = Ticket(waiter, wait.max_wait, turn=self._asked, tokens=wait.tokens)
        self._asked += 1
        if not self.queue.waiting(model):
            peer = self._with_room(ticket)
            if peer is not None:
                self._grant(ticket, peer)
                return ticket
        try:
            self.queue.push(ticket.waiter)
        except QueueFull as exc:
            eta = self.eta_for(model, self.queue.waiting(model), wait.tokens)
            raise self._refuse(model, Full(str(exc), eta)) from exc
        self._tickets[ticket.waiter] = ticket
        ticket.eta = self.eta(ticket)
        # An estimate from a guessed hold time (no call of the model timed here yet) is no
        # reason to turn a call away: it waits, up to its limit, and is told the guess.
        sure = model in self._hold or not self.ready(model)
        if ticket.eta > wait.max_wait and sure:
            self._drop(ticket)
            raise self._refuse(model, TooLong(self._too_long(model, ticket.eta), ticket.eta))
        return ticket

    async def turn(self, ticket: Ticket, report: Report | None = None) -> str:
        """Wait until ``ticket`` is granted a node; that node's id. ``report`` hears its
        position and ETA every ``REPORT_EVERY`` while it waits. A call cancelled while it
        waits gives its place (or its node) up; one that waits past its limit is
        ``TooLong``."""
        try:
            while not await self.wait_turn(ticket, REPORT_EVERY):
                if report is not None:
                    await report(*self.where(ticket))
        except BaseException:
            self.cancel(ticket)
            raise
        assert ticket.peer is not None
        return ticket.peer

    async def wait_turn(self, ticket: Ticket, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``ticket`` to be granted: whether it was.
        Past the caller's limit it leaves the queue as ``TooLong``; a timeout or a
        cancellation leaves it waiting (``cancel`` gives the place up)."""
        deadline = ticket.waiter.since + ticket.max_wait
        until = min(deadline, trio.current_time() + timeout)
        while True:
            self.pump(ticket.model)
            if ticket.granted.is_set():
                return True
            now = trio.current_time()
            if now >= deadline:
                self._drop(ticket)
                message = self._too_long(ticket.model, ticket.waited)
                raise self._refuse(ticket.model, TooLong(message, self.eta_for(ticket.model, 0)))
            if now >= until:
                return False
            # Pumped where room appears (``changed``, ``release``), not by each waiter.
            with trio.move_on_at(until):
                await ticket.granted.wait()

    def where(self, ticket: Ticket) -> tuple[int, float]:
        """A waiting ticket's position (0: next) and ETA in seconds."""
        if ticket.waiter not in self._tickets:
            return 0, 0.0
        return self.queue.position(ticket.waiter), self.eta(ticket)

    def cancel(self, ticket: Ticket) -> None:
        """The caller gave up: leave the queue, or free the node granted and not used."""
        if not self._drop(ticket) and ticket.peer is not None:
            self.release(ticket, served=False)

    def again(self, ticket: Ticket) -> None:
        """The node sent to refused (OVERLOADED) or failed before answering (its slot
        already released): back to the head of its user's line for the next freed slot."""
        ticket.granted = trio.Event()
        ticket.peer = ticket.dispatched_at = None
        self.queue.push(ticket.waiter, front=True)
        self._tickets[ticket.waiter] = ticket

    def release(self, ticket: Ticket, served: bool, refused: bool = False) -> None:
        """The call on ``ticket``'s node ended: its slot is free again; if it was ``served``
        its time holding the slot is measured; if the node ``refused`` it (OVERLOADED), no
        more calls for the model go there until the node reports its load again."""
        peer, model = ticket.peer, ticket.model
        entry = None if peer is None else self.table.entries.get(peer)
        if entry is not None and refused:
            entry.refused.add(model)  # full until it next reports its load
        if entry is not None:
            entry.open_by_model[model] = max(0, entry.open_by_model.get(model, 0) - 1)
            entry.local_delta -= 1
            entry.open_calls = max(0, entry.open_calls - 1)
            if entry.sent.get(model, 0) > 0:
                entry.sent[model] -= 1
        if served and ticket.dispatched_at is not None:
            now = trio.current_time()
            held = now - ticket.dispatched_at
            if entry is not None:
                entry.note_held(model, held)
            last = self._hold.get(model)
            self._hold[model] = held if last is None else 0.8 * last + 0.2 * held
            self._ends.setdefault(model, deque(maxlen=ENDS_KEPT)).append(now)
        ticket.peer = None
        self.pump(model)

    # The queue's engine.

    def changed(self) -> None:
        """The peer table changed (a load update, a node joined or left): grant what fits."""
        for model in self.queue.models():
            self.pump(model)

    def pump(self, model: str) -> None:
        """Grant the calls waiting for ``model``, in fair order, while nodes have room."""
        while (waiter := self.queue.pop(model)) is not None:
            ticket = self._tickets.pop(waiter)
            peer = self._with_room(ticket)
            if peer is None:  # its turn stays its own until a node has room
                self.queue.push(waiter, front=True)
                self._tickets[waiter] = ticket
                return
            self._grant(ticket, peer)

    def ready(self, model: str, avoid: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """The nodes that could take ``model`` (with room now or not), but ``avoid``."""
        return [
            e.peer_id for e in self.table.candidates(model, self._wall(), avoid) if self._usable(e)
        ]

    def _with_room(self, ticket: Ticket) -> str | None:
        """The first node in routing order that has room for ``ticket``'s call."""
        model = ticket.model
        ready = [
            e for e in self.table.candidates(model, self._wall(), ticket.avoid) if self._usable(e)
        ]
        for entry in self._order(ready, ticket.turn):
            if entry.room(model, self.node_queue) > 0:
                return entry.peer_id
            ours = entry.open_by_model.get(model, 0)
            if self.wait_for_best and ours and model not in entry.refused:
                # Where the call would end first is full of this gateway's own calls: one
                # ends soon and pumps the queue. A slower node with room would end it later.
                return None
        return None

    def _grant(self, ticket: Ticket, peer: str) -> None:
        entry = self.table.entries[peer]
        model = ticket.model
        entry.sent[model] = entry.sent.get(model, 0) + 1
        entry.open_by_model[model] = entry.open_by_model.get(model, 0) + 1
        entry.local_delta += 1
        entry.open_calls += 1
        ticket.peer, ticket.dispatched_at = peer, trio.current_time()
        ticket.granted.set()

    def _drop(self, ticket: Ticket) -> bool:
        if not self.queue.remove(ticket.waiter):
            return False
        self._tickets.pop(ticket.waiter, None)
        return True

    # Estimates and demand.

    def hold_time(self, model: str, tokens: int = 0) -> float:
        """Seconds a call of ``model`` holds a slot: as timed here; before that, ``tokens``
        at the best per-slot speed its nodes report; failing both, ``FIRST_GUESS``."""
        held = self._hold.get(model)
        if held is not None:
            return held
        speeds = [
            m.tokens_per_s / max(1, m.capacity)
            for e in self.table.entries.values()
            if (m := e.models.get(model)) is not None and m.tokens_per_s > 0
        ]
        if tokens > 0 and speeds:
            return tokens / max(speeds)
        return FIRST_GUESS

    def eta(self, ticket: Ticket) -> float:
        """Seconds until ``ticket`` is likely sent."""
        return self.eta_for(ticket.model, self.queue.position(ticket.waiter), ticket.tokens)

    def eta_for(self, model: str, position: int, tokens: int = 0) -> float:
        """Seconds until the call with ``position`` calls ahead of it in this queue is
        likely sent: one call must end for each of them and one for itself."""
        ready = [e for e in self.table.candidates(model, self._wall()) if self._usable(e)]
        # A node that reports only its total load counts all its slots, as ``room`` does.
        slots = sum(
            e.models[model].capacity if model in e.models else e.load.capacity for e in ready
        )
        if not slots:
            return LOAD_GUESS if self.table.loadable(model) else math.inf
        return (position + 1) / self.end_rate(model, slots, tokens)

    def end_rate(self, model: str, slots: int, tokens: int = 0) -> float:
        """Calls of ``model`` a second that end: as measured over this gateway's last calls
        (the rate of a busy swarm, node queues and batching included), and at least
        ``slots`` over the time a call holds one. A call's hold counts its wait in a node's
        queue, so that floor alone would be low when the nodes are busy; the measured rate
        alone would be low when calls were few."""
        now = trio.current_time()
        ends = [t for t in self._ends.get(model, ()) if t > now - RATE_WINDOW]
        spread = ends[-1] - ends[0] if len(ends) > 2 else 0.0
        measured = (len(ends) - 1) / spread if spread > 0 else 0.0
        return max(measured, slots / self.hold_time(model, tokens))

    def _too_long(self, model: str, seconds: float) -> str:
        if math.isinf(seconds):
            return f"no node can take {model!r} now"
        return f"{model!r} is busy: the wait would be about {seconds:.1f} s, past your limit"

    def _refuse(self, model: str, exc: Refused) -> Refused:
        now = trio.current_time()
        kept = [t for t in self._refusals.get(model, []) if t > now - REFUSALS_KEPT]
        self._refusals[model] = [*kept, now]
        return exc

    def demand(self) -> dict[str, ModelDemand]:
        """Per model with calls waiting or refused lately: what nodes are told of demand."""
        now = trio.current_time()
        found: dict[str, ModelDemand] = {}
        for model in {*self.queue.models(), *self._refusals}:
            refused = [t for t in self._refusals.get(model, []) if t > now - REFUSALS_KEPT]
            if not refused:
                self._refusals.pop(model, None)
            queued = self.queue.waiting(model)
            if not (queued or refused):
                continue
            oldest = self.queue.oldest(model)
            states = [
                m.state for e in self.table.entries.values() for m in e.record.models
                if m.id == model
            ]  # fmt: skip
            found[model] = ModelDemand(
                queued=queued,
                oldest_wait=0.0 if oldest is None else round(now - oldest, 3),
                refused=len(refused),
                ready=states.count("ready"),
                loading=states.count("loading"),
            )
        return found
