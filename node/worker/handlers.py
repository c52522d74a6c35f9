"""The node's RPC methods: generate, generate_image, speak, transcribe, describe, status,
watch, record, and the operator's load_model and unload_model.

``generate`` streams text deltas as chunks, each with the token counts so far, and ends
with usage; ``generate_image`` sends each denoising step as a chunk when asked to
(``progress``), then each image as its own chunk (one PNG per frame keeps frames under the
size cap) and ends with the count and the seed used; ``speak`` streams audio chunks as
the model makes them and ends with the seconds made; ``transcribe`` answers one window of
speech with its transcript; ``describe`` (pictures in a chat) streams text exactly as
``generate`` does; ``watch`` streams the node's live load whenever it changes (coalesced)
and at least every second, which is how gateways see load far fresher than the DHT record
can carry it.
``load_model`` streams the loading's progress and ends with the model's description; both
operator methods refuse anyone but a caller with the ``operator`` role.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import asdict, replace
from typing import Any, Protocol, TypeGuard, TypeVar

import trio

from node.p2p.rpc_server import Caller, Emit, Handler, RpcError
from node.worker.memory import NotEnoughMemory
from node.worker.roster import Busy, Roster
from node.worker.runners.base import (
    Delta,
    ImageRunner,
    Runner,
    SpeechRunner,
    Steps,
    TranscriptionRunner,
    VisionRunner,
    no_steps,
)
from node.worker.scheduler import Draining, Overloaded, Scheduler
from node.worker.threads import drain, in_thread, pump
from protocols import (
    AudioChunk,
    ErrorCode,
    GenerateParams,
    ImageParams,
    ImageStep,
    Load,
    RemoteProtocolError,
    SpeechParams,
    TranscribeParams,
    VisionParams,
    answer_to_wire,
)
from protocols.events import WatchUpdate
from protocols.generation import MAX_SEED
from protocols.operator import ModelSpec, Unload

logger = logging.getLogger(__name__)

WATCH_INTERVAL = 1.0
WATCH_COALESCE = 0.05

T = TypeVar("T")
P = TypeVar("P")
R = TypeVar("R")


# How loading reports progress to the operator's call: a message and a fraction or None.
Report = Callable[[str, float | None], Awaitable[None]]


class Control(Protocol):
    """What the node does when an operator loads or unloads a model."""

    async def load_model(self, spec: ModelSpec, report: Report) -> dict[str, Any]: ...

    async def unload_model(self, request: Unload) -> dict[str, Any]: ...


class NodeService:
    def __init__(
        self,
        roster: Roster,
        memory_free: Callable[[], int],
        signed_record: Callable[[], tuple[int, bytes]] = lambda: (0, b""),
        control: Control | None = None,
    ) -> None:
        self.roster = roster
        self._memory_free = memory_free
        self._signed_record = signed_record
        self._control = control

    @property
    def handlers(self) -> dict[str, Handler]:
        return {
            "generate": self.rpc_generate,
            "generate_image": self.rpc_generate_image,
            "speak": self.rpc_speak,
            "transcribe": self.rpc_transcribe,
            "describe": self.rpc_describe,
            "status": self.rpc_status,
            "watch": self.rpc_watch,
            "record": self.rpc_record,
            "load_model": self.rpc_load_model,
            "unload_model": self.rpc_unload_model,
        }

    def load(self) -> Load:
        return self.roster.load(self._memory_free())

    async def rpc_status(
        self, params: dict[str, Any], caller: Caller, emit: Emit
    ) -> dict[str, Any]:
        return asdict(self.load())

    async def rpc_record(
        self, params: dict[str, Any], caller: Caller, emit: Emit
    ) -> dict[str, Any]:
        """The node's current signed DHT record, fresher than any DHT copy."""
        seq, signed = self._signed_record()
        return {"seq": seq, "record": signed}

    async def rpc_watch(self, params: dict[str, Any], caller: Caller, emit: Emit) -> dict[str, Any]:
        while True:
            seen = self.roster.version
            await emit(WatchUpdate(self.load(), self._signed_record()[0]).to_wire())
            sent = trio.current_time()
            with trio.move_on_after(WATCH_INTERVAL):
                await self.roster.wait_changed(seen)
                # The first change goes out at once; a burst right after it is folded
                # into one update per WATCH_COALESCE.
                await trio.sleep_until(sent + WATCH_COALESCE)

    async def rpc_generate(
        self, params: dict[str, Any], caller: Caller, emit: Emit
    ) -> dict[str, Any]:
        request = _inference_params(caller, GenerateParams.from_wire, params)
        runner, scheduler = self._runner(request.model, _is_text, "text")
        async with _slot(scheduler, request.model):
            return await self._generate(
                lambda flag: runner.generate(request, flag), request.stream, emit, scheduler
            )

    def _runner(
        self, model: str, fits: Callable[[object], TypeGuard[R]], what: str
    ) -> tuple[R, Scheduler]:
        """The runner serving ``model``, if it is of the kind ``fits`` accepts, and the
        scheduler of its slots."""
        held = self.roster.get(model)
        if held is not None and held.state in ("loading", "draining"):
            # Not here for now: the gateway tries another peer.
            raise RpcError(ErrorCode.UNAVAILABLE, f"{model} is {held.state} on this node")
        runner = None if held is None else held.runner
        if held is None or held.scheduler is None or not fits(runner):
            raise RpcError(
                ErrorCode.MODEL_NOT_FOUND, f"this node does not serve {model!r} for {what}"
            )
        return runner, held.scheduler

    async def rpc_load_model(
        self, params: dict[str, Any], caller: Caller, emit: Emit
    ) -> dict[str, Any]:
        control, spec = self._operator(caller), _parsed(ModelSpec.from_wire, params)

        async def report(message: str, fraction: float | None) -> None:
            await emit({"message": message, "fraction": fraction})

        with _refusals():
            return await control.load_model(spec, report)

    async def rpc_unload_model(
        self, params: dict[str, Any], caller: Caller, emit: Emit
    ) -> dict[str, Any]:
        control, request = self._operator(caller), _parsed(Unload.from_wire, params)
        if self.roster.get(request.model) is None:
            raise RpcError(ErrorCode.MODEL_NOT_FOUND, f"this node has no {request.model!r}")
        with _refusals():
            return await control.unload_model(request)

    def _operator(self, caller: Caller) -> Control:
        if caller.role != "operator":
            raise RpcError(ErrorCode.UNAUTHORIZED, "only the swarm's operator may load models")
        if self._control is None:
            raise RpcError(ErrorCode.UNAVAILABLE, "this node does not load models at runtime")
        return self._control

    async def _generate(
        self,
        start: Callable[[threading.Event], Iterator[Delta]],
        stream: bool,
        emit: Emit,
        scheduler: Scheduler,
    ) -> dict[str, Any]:
        """Relay the deltas ``start(cancelled)`` yields: as chunks if ``stream``, else whole
        in the end frame."""
        cancelled = threading.Event()
        try:
            deltas = start(cancelled)
        except ValueError as exc:
            raise RpcError(ErrorCode.BAD_REQUEST, str(exc)) from exc
        started = time.monotonic()
        send, receive = trio.open_memory_channel[Delta | Exception](math.inf)
        last: Delta | None = None
        whole: list[Delta] = []  # the answer, when the caller did not ask for a stream
        failure: Exception | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, deltas, send, cancelled, _finished)
                async for first in receive:
                    # Deltas that arrived while the last chunk was being written go
                    # out together: one frame instead of one per token.
                    batch = [first, *drain(receive)]
                    failure = next((i for i in batch if isinstance(i, Exception)), None)
                    if failure is not None:
                        # Raised below, outside the nursery, which would wrap it in an
                        # exception group and hide its message and error code.
                        nursery.cancel_scope.cancel()
                        break
                    pieces = [d for d in batch if isinstance(d, Delta)]
                    last = pieces[-1]
                    chunk = _joined(pieces)
                    if chunk and stream:
                        # The counts so far go with the text: a caller that hangs up, or
                        # a call that fails, is charged for what it was sent.
                        counts = {
                            "prompt_tokens": last.prompt_tokens,
                            "completion_tokens": last.completion_tokens,
                        }
                        await emit(chunk | counts)
                    elif chunk:
                        whole += pieces
        finally:
            # Tells the runner to stop between tokens when the caller has gone away.
            cancelled.set()
        if failure is not None:
            raise failure
        if last is None:
            raise RpcError(ErrorCode.INTERNAL, "the model produced nothing")
        scheduler.record_speed(last.completion_tokens, time.monotonic() - started)
        return {
            "finish_reason": last.finish_reason or "stop",
            "prompt_tokens": last.prompt_tokens,
            "completion_tokens": last.completion_tokens,
        } | ({} if stream else _joined(whole) or {"text": ""})

    async def rpc_generate_image(
        self, params: dict[str, Any], caller: Caller, emit: Emit
    ) -> dict[str, Any]:
        request = _inference_params(caller, ImageParams.from_wire, params)
        runner, scheduler = self._runner(request.model, _is_image, "images")
        if request.seed is None:  # chosen here so the caller learns it and can repeat the images
            request = replace(request, seed=secrets.randbelow(MAX_SEED + 1))
        send, receive = trio.open_memory_channel[ImageStep](math.inf)
        steps = _from_thread(send) if request.progress else no_steps
        made: list[list[bytes]] = []
        failure: list[Exception] = []

        async def make() -> None:
            with send:  # closed once the model is done: the relay sends what is left, and ends
                try:
                    made.append(
                        await in_thread(lambda flag: runner.generate_images(request, flag, steps))
                    )
                except Exception as exc:  # raised below: inside the nursery it would be grouped
                    failure.append(exc)

        async with _slot(scheduler, request.model), trio.open_nursery() as nursery:
            nursery.start_soon(make)
            async for first in receive:
                # Steps that came while one was being sent fold into the latest.
                await emit([first, *drain(receive)][-1].to_wire())
        if failure:
            if isinstance(failure[0], ValueError):
                raise RpcError(ErrorCode.BAD_REQUEST, str(failure[0])) from failure[0]
            raise failure[0]
        images = made[0]
        for image in images:
            await emit({"image": image})
        return {"images": len(images), "seed": request.seed}

    async def rpc_speak(self, params: dict[str, Any], caller: Caller, emit: Emit) -> dict[str, Any]:
        request = _inference_params(caller, SpeechParams.from_wire, params)
        runner, scheduler = self._runner(request.model, _is_speech, "speech")
        cancelled = threading.Event()
        send, receive = trio.open_memory_channel[AudioChunk | Exception](math.inf)
        seconds, count = 0.0, 0
        failure: Exception | None = None
        async with _slot(scheduler, request.model):
            try:
                async with trio.open_nursery() as nursery:
                    chunks = runner.speak(request, cancelled)
                    nursery.start_soon(pump, chunks, send, cancelled, lambda _: False)
                    async for item in receive:
                        if isinstance(item, Exception):
                            failure = item
                            nursery.cancel_scope.cancel()
                            break
                        await emit(item.to_wire())
                        seconds, count = seconds + item.seconds, count + 1
            finally:
                cancelled.set()  # a caller gone away stops the model at its next piece
        if failure is not None:
            raise failure
        return {"chunks": count, "audio_seconds": round(seconds, 3)}

    async def rpc_transcribe(
        self, params: dict[str, Any], caller: Caller, emit: Emit
    ) -> dict[str, Any]:
        request = _inference_params(caller, TranscribeParams.from_wire, params)
        runner, scheduler = self._runner(request.model, _is_transcriber, "transcription")
        started = time.monotonic()
        try:
            async with _slot(scheduler, request.model):
                heard = await in_thread(lambda flag: runner.transcribe(request, flag))
        except ValueError as exc:
            raise RpcError(ErrorCode.BAD_REQUEST, str(exc)) from exc
        scheduler.record_speed(heard.completion_tokens, time.monotonic() - started)
        return heard.to_wire() | {"audio_seconds": round(request.seconds, 3)}

    async def rpc_describe(
        self, params: dict[str, Any], caller: Caller, emit: Emit
    ) -> dict[str, Any]:
        request = _inference_params(caller, VisionParams.from_wire, params)
        runner, scheduler = self._runner(request.model, _is_vision, "pictures")
        async with _slot(scheduler, request.model):
            return await self._generate(
                lambda flag: runner.describe(request, flag), request.stream, emit, scheduler
            )


@asynccontextmanager
async def _slot(scheduler: Scheduler, model: str) -> AsyncIterator[None]:
    """A slot of ``model``; a full or draining one answers with an error code."""
    try:
        async with scheduler.slot():
            yield
    except Overloaded as exc:
        raise RpcError(ErrorCode.OVERLOADED, f"{model} is {exc} on this node") from exc
    except Draining as exc:
        raise RpcError(ErrorCode.UNAVAILABLE, f"{model} {exc}") from exc


def _parsed(parse: Callable[[dict[str, Any]], P], params: dict[str, Any]) -> P:
    try:
        return parse(params)
    except RemoteProtocolError as exc:
        raise RpcError(ErrorCode.BAD_REQUEST, str(exc)) from exc


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """A load or unload the node turns down, as the code that says why."""
    try:
        yield
    except Busy as exc:
        raise RpcError(ErrorCode.BAD_REQUEST, str(exc)) from exc
    except NotEnoughMemory as exc:
        raise RpcError(ErrorCode.NO_MEMORY, str(exc)) from exc


def _inference_params(
    caller: Caller, parse: Callable[[dict[str, Any]], P], params: dict[str, Any]
) -> P:
    """Only gateways run models; their parameters are checked like any peer input."""
    if caller.role != "gateway":
        raise RpcError(ErrorCode.UNAUTHORIZED, "only gateways may run inference")
    return _parsed(parse, params)


def _is_text(runner: object) -> TypeGuard[Runner]:
    return isinstance(runner, Runner)


def _is_image(runner: object) -> TypeGuard[ImageRunner]:
    return isinstance(runner, ImageRunner)


def _is_speech(runner: object) -> TypeGuard[SpeechRunner]:
    return isinstance(runner, SpeechRunner)


def _is_transcriber(runner: object) -> TypeGuard[TranscriptionRunner]:
    return isinstance(runner, TranscriptionRunner)


def _is_vision(runner: object) -> TypeGuard[VisionRunner]:
    return isinstance(runner, VisionRunner)


def _from_thread(send: trio.MemorySendChannel[ImageStep]) -> Steps:
    """A ``Steps`` for the runner's thread that hands each step to this trio loop, in order
    (callbacks run FIFO, all before the thread's own completion)."""
    token = trio.lowlevel.current_trio_token()

    def put(step: ImageStep) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            send.send_nowait(step)

    def steps(step: int, of: int) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(put, ImageStep(step, of))

    return steps


def _joined(deltas: list[Delta]) -> dict[str, Any]:
    """One chunk for ``deltas``: their text, logprobs and tool calls; empty if none has any."""
    text = "".join(d.text for d in deltas)
    extra = answer_to_wire(
        [lp for d in deltas for lp in d.logprobs], [c for d in deltas for c in d.tool_calls]
    )
    return ({"text": text} if text or extra else {}) | extra


def _finished(delta: Delta) -> bool:
    return delta.finish_reason is not None
