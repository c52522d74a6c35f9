"""Routes a generation to the least-loaded node that has the model, with failover.

A node that cannot be reached, refuses (OVERLOADED, draining) or vanishes before its
first reply is skipped and the next one tried, transparently: the user is charged once,
for the call that answered. A failure after the first token ends that stream with an
error, since the tokens already sent cannot be taken back. Image calls take the same
path; a node sends its first image only once all are made, so one that dies while
making them has answered nothing yet and is passed over like one that cannot be reached,
unless the call asked for its steps: then the first step is the first reply.
Speech streams like text (its first audio chunk is its first reply), a window of speech
to transcribe is answered whole, and a chat with pictures streams exactly as text does.
An embedding call is answered whole too: the node sends its vectors only once all are made.

Which node goes first is the routing policy: ``expected-wait`` (the default) ranks by the
peer table's expected wait; ``round-robin`` and ``random`` ignore load and exist to be
measured against it (``scripts/bench``). Failover is the same under each.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import AsyncExitStack, aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Policy
from gateway.routing.dispatch import Dispatcher, Refused, Ticket, Wait
from gateway.routing.peer_table import PeerEntry, PeerTable
from gateway.routing.tracker import Tracker
from node.p2p.rpc_client import Call, CallFailed, ConnectionLost, RemoteError
from protocols import (
    AudioChunk,
    CallPart,
    Calls,
    EmbedParams,
    ErrorCode,
    GenerateParams,
    ImageParams,
    ImageStep,
    RemoteProtocolError,
    SpeechParams,
    TokenLogprob,
    TranscribeParams,
    Transcript,
    Vectors,
    VisionParams,
    answer_from_wire,
)
from protocols.embedding import FLOAT_BYTES

logger = logging.getLogger(__name__)

RETRYABLE = {ErrorCode.OVERLOADED, ErrorCode.UNAVAILABLE, ErrorCode.MODEL_NOT_FOUND}
MAX_ATTEMPTS = 3


class RoutingError(Exception):
    pass


class UnknownModel(RoutingError):
    def __init__(self, model: str, available: list[str]) -> None:
        listed = ", ".join(available) if available else "none"
        super().__init__(f"model {model!r} is not served by any node (available: {listed})")
        self.available = available


# How long a caller turned away should wait before trying again (Retry-After), by why no
# node could take the call. A rough guess, meant to keep clients from hammering the gateway:
# a node busy with other calls frees a slot as soon as one ends; loading a model takes
# seconds (a small one) to minutes; a node draining or not answering is replaced, or gone
# from the table, within its record's TTL.
WAIT_BUSY = 2
WAIT_LOADING = 15
WAIT_AWAY = 5


class NoPeerReady(RoutingError):
    """The model exists in the swarm but no node can take the call now; ``retry_after``:
    seconds after which one may (the queue's estimate, or a guess from the nodes' states)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamError(RoutingError):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Piece:
    """A piece of a text answer: its text, the logprobs and tool calls that came with it,
    and its choice."""

    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)
    tool_calls: list[CallPart] = field(default_factory=list)
    index: int = 0  # the choice it belongs to


@dataclass
class Generation:
    """An answered call: ``pieces()`` yields its pieces (``deltas()`` their text alone),
    each naming its choice (0 unless several were asked for); ``usage`` holds the node's
    counts so far (each chunk carries them, every choice's together), then its end data;
    ``calls`` each choice's tool calls put together from their parts so far."""

    peer_id: str
    call: Call
    first: dict[str, Any] | None
    usage: dict[str, Any] = field(default_factory=dict)
    calls: dict[int, Calls] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.call.result is not None

    def _counted(self, chunk: dict[str, Any]) -> Piece:
        counts: dict[str, Any] = {
            k: chunk[k] for k in ("prompt_tokens", "completion_tokens") if k in chunk
        }
        if counts:
            self.usage = counts
        return self._piece(chunk)

    def _piece(self, chunk: dict[str, Any], index: Any = None) -> Piece:
        index = chunk.get("index", 0) if index is None else index
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise UpstreamError(ErrorCode.INTERNAL, "node sent a malformed answer: bad index")
        try:
            logprobs, parts = answer_from_wire(chunk)
            for part in parts:
                self.calls.setdefault(index, Calls()).add(part)
        except ValueError as exc:
            raise UpstreamError(ErrorCode.INTERNAL, f"node sent a malformed answer: {exc}") from exc
        return Piece(str(chunk.get("text", "")), logprobs, parts, index)

    async def pieces(self) -> AsyncGenerator[Piece, None]:
        try:
            if self.first is not None:
                yield self._counted(self.first)
            async for chunk in self.call:
                yield self._counted(chunk)
            # A non-streamed answer comes whole: one, or one per choice.
            result = self.call.result or {}
            if "text" in result:
                yield self._piece(result)
            choices = result.get("choices")
            for index, choice in enumerate(choices if isinstance(choices, list) else []):
                if isinstance(choice, dict) and "text" in choice:
                    yield self._piece(choice, index)
        except RemoteError as exc:
            raise UpstreamError(exc.code, f"node failed mid-answer: {exc.message}") from exc
        except ConnectionLost as exc:
            raise UpstreamError(ErrorCode.UNAVAILABLE, f"node lost mid-answer: {exc}") from exc
        self.usage = self.call.result or {}

    async def deltas(self) -> AsyncIterator[str]:
        async with aclosing(self.pieces()) as pieces:
            async for piece in pieces:
                yield piece.text

    async def text(self) -> str:
        return "".join([piece async for piece in self.deltas()])


@dataclass
class Drawing:
    """An image call a node has begun: ``events()`` yields its steps (when the call asked for
    them), then its images, which it also keeps; ``seed`` is the seed the node used."""

    peer_id: str
    call: Call
    first: dict[str, Any] | None
    n: int
    images: list[bytes] = field(default_factory=list)

    @property
    def seed(self) -> int | None:
        seed = (self.call.result or {}).get("seed")
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else None

    async def events(self) -> AsyncIterator[ImageStep | bytes]:
        with _mid_answer():
            chunks = self.call if self.first is None else _after(self.first, self.call)
            async for chunk in chunks:
                image = chunk.get("image")
                if isinstance(image, bytes) and len(self.images) < self.n:
                    self.images.append(image)
                    yield image
                elif self.images:  # a step after an image, or one image too many
                    raise self._malformed()
                else:
                    try:
                        yield ImageStep.from_wire(chunk)
                    except RemoteProtocolError as exc:
                        raise self._malformed() from exc
        if len(self.images) != self.n:
            raise self._malformed()

    def _malformed(self) -> UpstreamError:
        return UpstreamError(
            ErrorCode.INTERNAL, f"node {self.peer_id[-8:]} sent a malformed answer"
        )


async def _after(first: dict[str, Any], rest: Call) -> AsyncIterator[dict[str, Any]]:
    yield first
    async for chunk in rest:
        yield chunk


@contextmanager
def _mid_answer() -> Iterator[None]:
    """A node's failure once it has begun to answer, as the ``UpstreamError`` it is."""
    try:
        yield
    except RemoteError as exc:
        raise UpstreamError(exc.code, f"node failed mid-answer: {exc.message}") from exc
    except ConnectionLost as exc:
        raise UpstreamError(ErrorCode.UNAVAILABLE, f"node lost mid-answer: {exc}") from exc


@dataclass(frozen=True)
class Images:
    """An answered image call: PNG bytes, the node that made them and the seed it used."""

    peer_id: str
    images: list[bytes]
    seed: int | None


@dataclass
class Speech:
    """An answered speech call: ``chunks()`` yields the audio as the node makes it."""

    peer_id: str
    call: Call
    first: dict[str, Any] | None

    async def chunks(self) -> AsyncIterator[AudioChunk]:
        try:
            if self.first is not None:
                yield AudioChunk.from_wire(self.first)
            async for chunk in self.call:
                yield AudioChunk.from_wire(chunk)
        except RemoteProtocolError as exc:
            raise UpstreamError(ErrorCode.INTERNAL, f"node sent bad audio: {exc}") from exc
        except RemoteError as exc:
            raise UpstreamError(exc.code, f"node failed mid-answer: {exc.message}") from exc
        except ConnectionLost as exc:
            raise UpstreamError(ErrorCode.UNAVAILABLE, f"node lost mid-answer: {exc}") from exc


@dataclass(frozen=True)
class Heard:
    """An answered transcription call: the transcript and the node that heard it."""

    peer_id: str
    transcript: Transcript


@dataclass(frozen=True)
class Embeddings:
    """An answered embedding call: one packed float32 vector per input, in input order, the
    vectors' size, the tokens the node read, and the node."""

    peer_id: str
    rows: list[bytes]
    dimensions: int
    prompt_tokens: int


class Router:
    def __init__(
        self,
        table: PeerTable,
        tracker: Tracker,
        policy: Policy = "expected-wait",
        rng: random.Random | None = None,
        *,
        max_wait: float = 60.0,
        node_queue: int = 2,
        max_queued: int = 1024,
        max_queued_per_user: int = 64,
    ) -> None:
        self.table = table
        self.tracker = tracker
        self.policy = policy
        self.retries = 0
        self.max_wait = max_wait  # for calls that do not say
        self._rng = rng or random.Random()
        self.dispatcher = Dispatcher(
            table,
            lambda e: e.peer_id in tracker.clients,
            self._ordered,
            node_queue=node_queue,
            max_total=max_queued,
            max_per_user=max_queued_per_user,
            wall=lambda: time.time(),
            wait_for_best=self.policy == "expected-wait",
        )
        tracker.on_change.append(self.dispatcher.changed)

    def models(self, task: str | None = None) -> list[str]:
        """Every model id the swarm advertises (for ``task`` only, when given)."""
        return sorted(
            model
            for model, entries in self.table.models().items()
            if task is None
            or any(m.id == model and m.task == task for e in entries for m in e.record.models)
        )

    def serving(self) -> dict[str, list[dict[str, Any]]]:
        """Model id → the nodes that list it, with state, load and what the model can do
        there (an embedding model's vector size too)."""
        now = time.time()
        served: dict[str, list[dict[str, Any]]] = {}
        for model, entries in self.table.models().items():
            for e in entries:
                info = next(m for m in e.record.models if m.id == model)
                served.setdefault(model, []).append(
                    {
                        "peer_id": e.peer_id,
                        "state": info.state,
                        "task": info.task,
                        "healthy": not e.suspect(now) and not e.load.draining,
                        "inflight": e.load.inflight,
                        "queued": e.load.queued,
                        "capacity": e.load.capacity,
                        "capabilities": info.capabilities(),
                    }
                    | ({"dimensions": info.dimensions} if info.dimensions else {})
                )
        return served

    async def ask(self, model: str, task: str, wait: Wait) -> Ticket:
        """A place for one call of ``model``: granted now, or waiting in the fair queue.
        ``UnknownModel`` if no node serves or would load it; ``NoPeerReady`` (with when
        to retry) if it cannot wait within ``wait.max_wait``."""
        if model not in self.models(task) and not self.table.loadable(model):
            await self.tracker.find_model(model)
            if model not in self.models(task) and not self.table.loadable(model):
                if away := self.table.departed_serving(model, task, time.time()):
                    left = ", ".join(f"{p[-8:]}: not responding for {s:.0f} s" for p, s in away)
                    raise NoPeerReady(f"no node can take {model!r} now ({left})", WAIT_AWAY)
                raise UnknownModel(model, self.models(task))
        try:
            return self.dispatcher.ask(model, wait)
        except Refused as exc:
            if math.isinf(exc.retry_after):  # no node can take it at all: say why
                raise NoPeerReady(self._why_none(model), self._wait(model)) from exc
            raise NoPeerReady(str(exc), exc.retry_after) from exc

    async def wait_turn(self, ticket: Ticket, timeout: float) -> bool:
        """Whether ``ticket`` was granted within ``timeout``; ``NoPeerReady`` past its limit."""
        try:
            return await self.dispatcher.wait_turn(ticket, timeout)
        except Refused as exc:
            raise NoPeerReady(str(exc), exc.retry_after) from exc

    def where(self, ticket: Ticket) -> tuple[int, float]:
        return self.dispatcher.where(ticket)

    def cancel(self, ticket: Ticket) -> None:
        self.dispatcher.cancel(ticket)

    def _ordered(self, ready: list[PeerEntry], turn: int) -> list[PeerEntry]:
        """``ready`` (best expected wait first) in the order this policy tries them."""
        if self.policy == "round-robin":
            # Rotated over every ready node, tried ones included, so a retry goes to the next
            # node in the cycle.
            cycle = sorted(ready, key=lambda e: e.peer_id)
            start = turn % len(cycle) if cycle else 0
            return cycle[start:] + cycle[:start]
        if self.policy == "random":
            return self._rng.sample(ready, len(ready))
        return ready

    def _why_none(self, model: str) -> str:
        states = [
            f"{e.peer_id[-8:]}: {m.state}"
            f"{' (draining)' if e.load.draining and m.state != 'draining' else ''}"
            f"{' (not responding)' if e.suspect(time.time()) else ''}"
            for e in self.table.models().get(model, [])
            for m in e.record.models
            if m.id == model
        ]
        return f"no node can take {model!r} now ({'; '.join(states) or 'none connected'})"

    def _wait(self, model: str) -> int:
        """Seconds until some node may take ``model``: the soonest of each node's guess."""
        now = time.time()
        waits = [
            WAIT_LOADING
            if m.state == "loading"
            else WAIT_BUSY
            if m.state == "ready"
            and not e.load.draining
            and not e.suspect(now)
            and e.peer_id in self.tracker.clients
            else WAIT_AWAY
            for e in self.table.models().get(model, [])
            for m in e.record.models
            if m.id == model
        ]
        return min(waits, default=WAIT_AWAY)

    @asynccontextmanager
    async def generate(
        self, params: GenerateParams, timeout: float, ticket: Ticket | None = None
    ) -> AsyncIterator[Generation]:
        """Stream a text generation from the best node that takes it (on ``ticket``'s
        turn, when the caller asked for one)."""
        opened = self._answered(
            "generate", params.model, "text-generation", params.to_wire(), timeout, ticket
        )
        async with opened as (peer, call, first):
            yield Generation(peer, call, first)

    @asynccontextmanager
    async def draw(
        self, params: ImageParams, timeout: float, wait: Wait | None = None
    ) -> AsyncIterator[Drawing]:
        """Generate images on the best node that takes the call, step by step (waiting in
        the queue as ``wait`` says: its caller's turn among the others)."""
        opened = self._answered(
            "generate_image", params.model, "text-to-image", params.to_wire(), timeout, wait=wait
        )
        async with opened as (peer, call, first):
            yield Drawing(peer, call, first, params.n)

    async def generate_image(
        self, params: ImageParams, timeout: float, wait: Wait | None = None
    ) -> Images:
        """Generate images on the best node that takes the call."""
        async with self.draw(params, timeout, wait) as drawing:
            async for _ in drawing.events():
                pass
        return Images(drawing.peer_id, drawing.images, drawing.seed)

    @asynccontextmanager
    async def speak(
        self, params: SpeechParams, timeout: float, wait: Wait | None = None
    ) -> AsyncIterator[Speech]:
        """Stream speech from the best node that takes the call (queued as ``wait`` says)."""
        opened = self._answered(
            "speak", params.model, "text-to-speech", params.to_wire(), timeout, wait=wait
        )
        async with opened as (peer, call, first):
            yield Speech(peer, call, first)

    async def transcribe(
        self, params: TranscribeParams, timeout: float, wait: Wait | None = None
    ) -> Heard:
        """One window of speech, heard by the best node that takes the call (queued as
        ``wait`` says)."""
        opened = self._answered(
            "transcribe", params.model, "speech-to-text", params.to_wire(), timeout, wait=wait
        )
        async with opened as (peer, call, first):
            try:
                rest = [chunk async for chunk in call]
            except RemoteError as exc:
                raise UpstreamError(exc.code, exc.message) from exc
            except ConnectionLost as exc:
                raise UpstreamError(ErrorCode.UNAVAILABLE, f"node lost mid-answer: {exc}") from exc
        if first is not None or rest:
            raise UpstreamError(ErrorCode.INTERNAL, f"node {peer[-8:]} sent a malformed answer")
        try:
            return Heard(peer, Transcript.from_wire(call.result or {}, params.seconds))
        except RemoteProtocolError as exc:
            raise UpstreamError(ErrorCode.INTERNAL, f"node {peer[-8:]}: {exc}") from exc

    async def embed(
        self, params: EmbedParams, timeout: float, wait: Wait | None = None
    ) -> Embeddings:
        """A vector for each input, made by the best node that takes the call (queued as
        ``wait`` says)."""
        opened = self._answered(
            "embed", params.model, "embedding", params.to_wire(), timeout, wait=wait
        )
        async with opened as (peer, call, first):
            with _mid_answer():
                chunks = [chunk async for chunk in (call if first is None else _after(first, call))]
        result = call.result or {}
        dimensions, tokens = result.get("dimensions"), result.get("prompt_tokens")
        try:
            rows = [row for chunk in chunks for row in Vectors.from_wire(chunk).rows()]
        except RemoteProtocolError as exc:
            raise UpstreamError(ErrorCode.INTERNAL, f"node {peer[-8:]}: {exc}") from exc
        wanted = params.dimensions or dimensions
        if (
            not isinstance(dimensions, int)
            or not isinstance(tokens, int)
            or dimensions != wanted
            or len(rows) != params.count
            or any(len(row) != dimensions * FLOAT_BYTES for row in rows)
        ):
            raise UpstreamError(ErrorCode.INTERNAL, f"node {peer[-8:]} sent a malformed answer")
        return Embeddings(peer, rows, dimensions, tokens)

    @asynccontextmanager
    async def describe(
        self, params: VisionParams, timeout: float, ticket: Ticket | None = None
    ) -> AsyncIterator[Generation]:
        """Stream the answer to a chat with pictures from the best node that takes it."""
        opened = self._answered(
            "describe", params.model, "image-to-text", params.to_wire(), timeout, ticket
        )
        async with opened as (peer, call, first):
            yield Generation(peer, call, first)

    @asynccontextmanager
    async def _answered(
        self,
        method: str,
        model: str,
        task: str,
        wire: dict[str, Any],
        timeout: float,
        ticket: Ticket | None = None,
        wait: Wait | None = None,
    ) -> AsyncIterator[tuple[str, Call, dict[str, Any] | None]]:
        """Open ``method`` on the node ``ticket`` is granted (asking for one as ``wait``
        says if none was given): (peer, call, first reply). A node that refuses
        (OVERLOADED) sends the call back to the head of the queue for the next freed slot;
        one that fails before answering does too, at most ``MAX_ATTEMPTS`` times."""
        if ticket is None:
            ticket = await self.ask(model, task, wait or Wait(max_wait=self.max_wait))
        failures = 0
        last_error = ""
        while True:
            try:
                peer = await self.dispatcher.turn(ticket)
            except Refused as exc:
                reason = f"{exc}; last error: {last_error}" if last_error else str(exc)
                raise NoPeerReady(reason, exc.retry_after) from exc
            client = self.tracker.clients.get(peer)
            ended = _Ended()
            async with AsyncExitStack() as stack:
                stack.callback(self._release, ticket, ended)
                try:
                    if client is None:
                        raise CallFailed("the node's connection closed")
                    call = await stack.enter_async_context(client.open_call(method, wire, timeout))
                    first = await anext(call, None)
                except RemoteError as exc:
                    if exc.code not in RETRYABLE:
                        raise UpstreamError(exc.code, exc.message) from exc
                    last_error = exc.message
                    ended.full = exc.code == ErrorCode.OVERLOADED
                except ConnectionLost as exc:
                    if exc.started:
                        raise UpstreamError(ErrorCode.UNAVAILABLE, str(exc)) from exc
                    last_error = str(exc)
                except CallFailed as exc:
                    last_error = str(exc)
                else:
                    ended.served = True
                    yield peer, call, first
                    return
            self.retries += 1
            if not ended.full:
                failures += 1
                ticket.avoid.add(peer)
            logger.info("node %s did not take the call (%s); trying another", peer[-8:], last_error)
            if failures >= MAX_ATTEMPTS or not self.dispatcher.ready(model, ticket.avoid):
                reason = self._why_none(model)
                raise NoPeerReady(f"{reason}; last error: {last_error}", self._wait(model))
            self.dispatcher.again(ticket)

    def _release(self, ticket: Ticket, ended: _Ended) -> None:
        self.dispatcher.release(ticket, ended.served, ended.full)


@dataclass
class _Ended:
    """How a call sent to a node ended: answered (``served``) or refused as full."""

    served: bool = False
    full: bool = False
