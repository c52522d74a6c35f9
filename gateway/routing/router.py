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

Which node goes first is the routing policy: ``expected-wait`` (the default) ranks by the
peer table's expected wait; ``round-robin`` and ``random`` ignore load and exist to be
measured against it (``scripts/bench``). Failover is the same under each.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Policy
from gateway.routing.peer_table import PeerEntry, PeerTable
from gateway.routing.tracker import Tracker
from node.p2p.rpc_client import Call, CallFailed, ConnectionLost, RemoteError
from protocols import (
    AudioChunk,
    ErrorCode,
    GenerateParams,
    ImageParams,
    ImageStep,
    RemoteProtocolError,
    SpeechParams,
    TokenLogprob,
    ToolCall,
    TranscribeParams,
    Transcript,
    VisionParams,
    answer_from_wire,
)

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
    seconds after which one may (an estimate)."""

    def __init__(self, message: str, retry_after: int = WAIT_AWAY) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamError(RoutingError):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Piece:
    """A piece of a text answer: its text, and the logprobs and tool calls that came with it."""

    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass
class Generation:
    """An answered call: ``pieces()`` yields its pieces (``deltas()`` their text alone);
    ``usage`` holds the node's counts so far (each chunk carries them), then its end data."""

    peer_id: str
    call: Call
    first: dict[str, Any] | None
    usage: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.call.result is not None

    def _counted(self, chunk: dict[str, Any]) -> Piece:
        counts: dict[str, Any] = {
            k: chunk[k] for k in ("prompt_tokens", "completion_tokens") if k in chunk
        }
        if counts:
            self.usage = counts
        return _piece(chunk)

    async def pieces(self) -> AsyncIterator[Piece]:
        try:
            if self.first is not None:
                yield self._counted(self.first)
            async for chunk in self.call:
                yield self._counted(chunk)
            if self.call.result and "text" in self.call.result:
                yield _piece(self.call.result)  # a non-streamed answer comes whole
        except RemoteError as exc:
            raise UpstreamError(exc.code, f"node failed mid-answer: {exc.message}") from exc
        except ConnectionLost as exc:
            raise UpstreamError(ErrorCode.UNAVAILABLE, f"node lost mid-answer: {exc}") from exc
        self.usage = self.call.result or {}

    async def deltas(self) -> AsyncIterator[str]:
        async for piece in self.pieces():
            yield piece.text

    async def text(self) -> str:
        return "".join([piece async for piece in self.deltas()])


def _piece(chunk: dict[str, Any]) -> Piece:
    try:
        logprobs, calls = answer_from_wire(chunk)
    except ValueError as exc:
        raise UpstreamError(ErrorCode.INTERNAL, f"node sent a malformed answer: {exc}") from exc
    return Piece(str(chunk.get("text", "")), logprobs, calls)


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


class Router:
    def __init__(
        self,
        table: PeerTable,
        tracker: Tracker,
        policy: Policy = "expected-wait",
        rng: random.Random | None = None,
    ) -> None:
        self.table = table
        self.tracker = tracker
        self.policy = policy
        self.retries = 0
        self._rng = rng or random.Random()
        self._turn = 0  # round-robin: calls routed so far

    def models(self, task: str | None = None) -> list[str]:
        """Every model id the swarm advertises (for ``task`` only, when given)."""
        return sorted(
            model
            for model, entries in self.table.models().items()
            if task is None
            or any(m.id == model and m.task == task for e in entries for m in e.record.models)
        )

    def serving(self) -> dict[str, list[dict[str, Any]]]:
        """Model id → the nodes that list it, with state and load."""
        now = time.time()
        return {
            model: [
                {
                    "peer_id": e.peer_id,
                    "state": next(m.state for m in e.record.models if m.id == model),
                    "task": next(m.task for m in e.record.models if m.id == model),
                    "healthy": not e.suspect(now) and not e.load.draining,
                    "inflight": e.load.inflight,
                    "queued": e.load.queued,
                    "capacity": e.load.capacity,
                }
                for e in entries
            ]
            for model, entries in self.table.models().items()
        }

    async def _candidates(self, model: str, task: str, tried: set[str], turn: int) -> list[str]:
        if model not in self.models(task):
            await self.tracker.find_model(model)
            if model not in self.models(task):
                raise UnknownModel(model, self.models(task))
        ready = [
            e
            for e in self.table.candidates(model, time.time())
            if e.peer_id in self.tracker.clients
        ]
        return [e.peer_id for e in self._ordered(ready, turn) if e.peer_id not in tried]

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

    def _ended(self, peer: str) -> None:
        entry = self.table.entries.get(peer)
        if entry is not None:
            entry.local_delta -= 1
            entry.open_calls = max(0, entry.open_calls - 1)

    @asynccontextmanager
    async def generate(self, params: GenerateParams, timeout: float) -> AsyncIterator[Generation]:
        """Stream a text generation from the best node that takes it."""
        opened = self._answered(
            "generate", params.model, "text-generation", params.to_wire(), timeout
        )
        async with opened as (peer, call, first):
            yield Generation(peer, call, first)

    @asynccontextmanager
    async def draw(self, params: ImageParams, timeout: float) -> AsyncIterator[Drawing]:
        """Generate images on the best node that takes the call, step by step."""
        opened = self._answered(
            "generate_image", params.model, "text-to-image", params.to_wire(), timeout
        )
        async with opened as (peer, call, first):
            yield Drawing(peer, call, first, params.n)

    async def generate_image(self, params: ImageParams, timeout: float) -> Images:
        """Generate images on the best node that takes the call."""
        async with self.draw(params, timeout) as drawing:
            async for _ in drawing.events():
                pass
        return Images(drawing.peer_id, drawing.images, drawing.seed)

    @asynccontextmanager
    async def speak(self, params: SpeechParams, timeout: float) -> AsyncIterator[Speech]:
        """Stream speech from the best node that takes the call."""
        opened = self._answered("speak", params.model, "text-to-speech", params.to_wire(), timeout)
        async with opened as (peer, call, first):
            yield Speech(peer, call, first)

    async def transcribe(self, params: TranscribeParams, timeout: float) -> Heard:
        """One window of speech, heard by the best node that takes the call."""
        opened = self._answered(
            "transcribe", params.model, "speech-to-text", params.to_wire(), timeout
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

    @asynccontextmanager
    async def describe(self, params: VisionParams, timeout: float) -> AsyncIterator[Generation]:
        """Stream the answer to a chat with pictures from the best node that takes it."""
        opened = self._answered(
            "describe", params.model, "image-to-text", params.to_wire(), timeout
        )
        async with opened as (peer, call, first):
            yield Generation(peer, call, first)

    @asynccontextmanager
    async def _answered(
        self, method: str, model: str, task: str, wire: dict[str, Any], timeout: float
    ) -> AsyncIterator[tuple[str, Call, dict[str, Any] | None]]:
        """Open ``method`` on the best node that answers it: (peer, call, first reply)."""
        tried: set[str] = set()
        last_error = ""
        turn = self._turn
        self._turn += 1
        for _ in range(MAX_ATTEMPTS):
            peers = await self._candidates(model, task, tried, turn)
            if not peers:
                break
            peer = peers[0]
            tried.add(peer)
            client = self.tracker.clients.get(peer)
            entry = self.table.entries.get(peer)
            if client is None or entry is None:
                continue
            entry.local_delta += 1
            entry.open_calls += 1
            async with AsyncExitStack() as stack:
                stack.callback(self._ended, peer)
                try:
                    call = await stack.enter_async_context(client.open_call(method, wire, timeout))
                    first = await anext(call, None)
                except RemoteError as exc:
                    if exc.code not in RETRYABLE:
                        raise UpstreamError(exc.code, exc.message) from exc
                    last_error = exc.message
                except ConnectionLost as exc:
                    if exc.started:
                        raise UpstreamError(ErrorCode.UNAVAILABLE, str(exc)) from exc
                    last_error = str(exc)
                except CallFailed as exc:
                    last_error = str(exc)
                else:
                    yield peer, call, first
                    return
            self.retries += 1
            logger.info("node %s did not take the call (%s); trying another", peer[-8:], last_error)
        reason = self._why_none(model)
        message = f"{reason}; last error: {last_error}" if last_error else reason
        raise NoPeerReady(message, self._wait(model))
