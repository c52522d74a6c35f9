"""The flow every inference route shares: meter, route, map errors, add headers.

``routed`` is that pipeline for text and image routes alike. Text routes then answer
whole or as SSE: chat and legacy completions differ only in request shape and how they
render text, so they hand a ``Renderer`` to ``stream`` and keep nothing else of their own.
A renderer words one choice; several (``n``) are its events with their ``index`` changed.
"""

from __future__ import annotations

import math
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import trio
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

import keys
from gateway.accounts import charges
from gateway.accounts.errors import Refused
from gateway.accounts.limits import Plan
from gateway.accounts.metering import Outcome, metered, rate_headers
from gateway.api import openai_api as oa
from gateway.api.errors import ApiError, refusal, routing_error, upstream_message
from gateway.api.response_cache import Answer
from gateway.api.services import Queue, Services, services
from gateway.routing.dispatch import Ticket, Wait
from gateway.routing.router import Generation, NoPeerReady, Piece, UnknownModel, UpstreamError
from protocols import GenerateParams, VisionParams, merged

NODE_HEADER = oa.NODE_HEADER
# How long the call waited in the gateway's queue for a node, in seconds.
QUEUE_WAIT_HEADER = "X-Queue-Wait"
# The longest a client will wait in the queue, in seconds (at most the gateway's own limit).
MAX_WAIT_HEADER = "x-max-wait"
# A streamed call still waiting hears its place this often, as an SSE comment.
QUEUE_REPORT_EVERY = 1.0
# What a node may say about why it stopped; anything else reads as "stop".
FINISH_REASONS = frozenset({"stop", "length", "tool_calls"})

T = TypeVar("T")


@dataclass
class Started:
    """A call that a node has begun to answer, or (``generation`` None) a streamed call
    still waiting in the queue, which ``opener`` opens on its turn; ``stack`` ends it (and
    its metering)."""

    generation: Generation | None
    outcome: Outcome
    stack: AsyncExitStack
    headers: dict[str, str]
    params: GenerateParams | VisionParams
    ticket: Ticket | None = None
    queue: Queue | None = None
    opener: Callable[[], AbstractAsyncContextManager[Generation]] | None = None

    @property
    def answered(self) -> Generation:
        assert self.generation is not None, "the call has not been sent to a node yet"
        return self.generation

    # Called with the answer once the call ended normally (the response cache keeps it).
    keep: Callable[[Answer], None] | None = None


@dataclass
class Renderer:
    """How a text route words its answer: ``whole``, or as a stream of events (``opening``,
    the events of each ``piece``, ``closing``); a stream ends with usage only if it was
    asked for."""

    id: str
    model: str
    include_usage: bool

    def whole(self, answer: Piece, finish_reason: str, usage: dict[str, int]) -> dict[str, Any]:
        """The complete answer, with why it ended and the tokens charged."""
        raise NotImplementedError

    def opening(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def piece(self, piece: Piece) -> list[dict[str, Any]]:
        raise NotImplementedError

    def finish(self, finish_reason: str) -> dict[str, Any]:
        raise NotImplementedError

    def usage(self, usage: dict[str, int]) -> dict[str, Any]:
        raise NotImplementedError

    def closing(self, finish_reasons: list[str], usage: dict[str, int]) -> list[dict[str, Any]]:
        events = [as_choice(self.finish(r), i) for i, r in enumerate(finish_reasons)]
        if self.include_usage:
            events.append(self.usage(usage))
        return events


def as_choice(event: dict[str, Any], index: int) -> dict[str, Any]:
    """``event``, rendered for the first choice, for choice ``index``."""
    if index == 0:
        return event
    return event | {"choices": [c | {"index": index} for c in event.get("choices", [])]}


@asynccontextmanager
async def routed(
    request: Request,
    claims: keys.Claims,
    model: str,
    kind: str,
    *,
    tokens: int = 0,
    images: int = 0,
    audio: int = 0,
) -> AsyncIterator[Outcome]:
    """Meter → route → error → headers: the call is admitted by the meters and recorded
    however it ends; a refusal or a routing failure becomes an HTTP error, and every HTTP
    error carries the caller's rate-limit headers. ``tokens``, ``images`` and ``audio``
    (seconds): the most the call may use, held back from the caller's quotas until it ends."""
    meters = services(request).meters
    try:
        metering = metered(meters, claims, model, kind, tokens=tokens, images=images, audio=audio)
        async with metering as outcome:
            try:
                yield outcome
            except (UnknownModel, NoPeerReady, UpstreamError) as exc:
                raise routing_error(exc) from exc
    except Refused as exc:
        error = refusal(exc)
        error.headers.update(rate_headers(meters, claims))
        raise error from exc
    except ApiError as exc:
        exc.headers.update(rate_headers(meters, claims))
        raise


async def start(
    request: Request,
    claims: keys.Claims,
    params: GenerateParams | VisionParams,
    kind: str,
    stream: bool = False,
) -> Started:
    """Admit the call and route it to a node: at once, or after waiting its turn in the
    queue. A ``stream`` that must wait comes back unsent, to wait while its response
    tells the client its place."""
    s = services(request)
    if isinstance(params, GenerateParams) and params.n > 1:
        plan = s.accounts.plan_of(claims.sub) if s.accounts is not None else Plan()
        if params.n > plan.max_choices:
            message = f"n is at most {plan.max_choices} on plan {plan.name!r}"
            raise ApiError(400, message, "invalid_request", "n")
    stack = AsyncExitStack()
    try:
        admitted = routed(request, claims, params.model, kind, tokens=charges.budget(params))
        outcome = await stack.enter_async_context(admitted)
        ticket = await _ask(request, s, claims, params)
        headers = rate_headers(s.meters, claims)
        if stream and ticket is not None and not ticket.granted.is_set():
            opener = _opener(s, params, ticket)
            return Started(None, outcome, stack, headers, params, ticket, s.queue, opener)
        generation = await stack.enter_async_context(_open(s, params, ticket))
    except BaseException:
        # Let the meters see the failure (and its status) before it propagates.
        await stack.__aexit__(*sys.exc_info())
        raise
    outcome.peer_id = generation.peer_id
    headers = {NODE_HEADER: generation.peer_id} | headers
    if ticket is not None:
        headers[QUEUE_WAIT_HEADER] = f"{ticket.waited:.3f}"
    return Started(generation, outcome, stack, headers, params, ticket, s.queue)


async def opened(
    admitted: AbstractAsyncContextManager[Outcome],
    call: Callable[[], AbstractAsyncContextManager[T]],
) -> tuple[AsyncExitStack, Outcome, T]:
    """The call admitted, then opened on a node, both held by the stack returned (which the
    answer exits once it is sent)."""
    stack = AsyncExitStack()
    try:
        outcome = await stack.enter_async_context(admitted)
        opened = await stack.enter_async_context(call())
    except BaseException:
        # Let the meters see the failure (and its status) before it propagates.
        await stack.__aexit__(*sys.exc_info())
        raise
    return stack, outcome, opened


async def _ask(
    request: Request, s: Services, claims: keys.Claims, params: GenerateParams | VisionParams
) -> Ticket | None:
    """The call's place in the queue (None where this gateway does not queue)."""
    if s.queue is None:
        return None
    task = "text-generation" if isinstance(params, GenerateParams) else "image-to-text"
    wait = replace(caller_wait(request, s, claims), tokens=params.max_tokens)
    return await s.queue.ask(params.model, task, wait)


def caller_wait(request: Request, s: Services, claims: keys.Claims) -> Wait:
    """Who is calling, at what priority, and how long they will wait for a node: the
    gateway's limit, or less if the client says so (``X-Max-Wait``)."""
    limit = Wait().max_wait if s.queue is None else s.queue.max_wait
    asked = request.headers.get(MAX_WAIT_HEADER)
    if asked is not None:
        try:
            limit = min(limit, float(asked))
        except ValueError:
            limit = math.nan
        if not limit >= 0:  # also false for nan
            raise ApiError(
                400, "X-Max-Wait must be a number of seconds, 0 or more", "invalid_request"
            )
    priority = 1 if s.accounts is None else s.accounts.plan_of(claims.sub).priority
    return Wait(claims.sub, priority, limit)


def _settle(started: Started, forwarded: str) -> dict[str, int]:
    """Charge the call for what the node says it used, checked against the request and
    the text ``forwarded`` to the caller; the usage to show."""
    generation = started.answered
    charge = charges.charge(started.params, generation.usage, forwarded, generation.finished)
    started.outcome.prompt_tokens = charge.prompt_tokens
    started.outcome.completion_tokens = charge.completion_tokens
    return oa.usage(charge.prompt_tokens, charge.completion_tokens)


def _open(
    s: Services, params: GenerateParams | VisionParams, ticket: Ticket | None = None
) -> AbstractAsyncContextManager[Generation]:
    """A text generation, or a chat with pictures (which answers in text the same way),
    on ``ticket``'s turn where it has one."""
    extra = () if ticket is None else (ticket,)
    if isinstance(params, GenerateParams):
        return s.backend.generate(params, s.request_timeout, *extra)
    if s.media is None:
        raise ApiError(503, "this gateway does not route pictures", "no_peer_ready")
    return s.media.describe(params, s.request_timeout, *extra)


def _opener(
    s: Services, params: GenerateParams | VisionParams, ticket: Ticket
) -> Callable[[], AbstractAsyncContextManager[Generation]]:
    return lambda: _open(s, params, ticket)


async def _waiting(started: Started) -> AsyncIterator[bytes]:
    """SSE comments while a streamed call waits its turn (``: queued, position 3, eta
    2.1s``), then one saying how long it waited. Leaving early gives its place up."""
    ticket, queue = started.ticket, started.queue
    assert ticket is not None and queue is not None
    try:
        while True:
            position, eta = queue.where(ticket)
            yield f": queued, position {position + 1}, eta {eta:.1f}s\n\n".encode()
            if await queue.wait_turn(ticket, QUEUE_REPORT_EVERY):
                break
    except BaseException:
        queue.cancel(ticket)
        raise
    yield f": dispatched, waited {ticket.waited:.3f}s\n\n".encode()


def _finish_reasons(started: Started) -> list[str]:
    """Why each choice ended, as the node says (``stop`` where it says nothing sensible)."""
    usage = started.answered.usage
    told = usage.get("choices")
    ends = (
        [c.get("finish_reason") for c in told if isinstance(c, dict)]
        if isinstance(told, list)
        else []
    )
    if len(ends) != _choices(started):
        ends = [usage.get("finish_reason")] * _choices(started)
    return [r if r in FINISH_REASONS else "stop" for r in ends]


def _choices(started: Started) -> int:
    return charges.choices(started.params)


def _kept(started: Started, pieces: list[Piece], usage: dict[str, int]) -> None:
    """Hand a call that the node finished to ``keep``."""
    if started.keep is not None and started.answered.finished:
        answer = Answer(
            tuple(pieces),
            _finish_reasons(started)[0],
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )
        started.keep(answer)


def forwarded_text(pieces: list[Piece]) -> str:
    """What ``pieces`` put in front of the caller, tool calls included (what the tokens
    charged for them must fit in)."""
    return "".join(
        p.text + "".join((c.name or "") + c.arguments for c in p.tool_calls) for p in pieces
    )


def joined(pieces: list[Piece]) -> Piece:
    """The whole answer in one piece, each tool call in one part."""
    return Piece(
        "".join(p.text for p in pieces),
        [lp for p in pieces for lp in p.logprobs],
        merged([c for p in pieces for c in p.tool_calls]),
    )


async def collect(started: Started) -> tuple[list[Piece], dict[str, int]]:
    """The whole answer (one piece per choice) and its usage; failures become HTTP errors
    carrying the rate-limit headers."""
    pieces: list[Piece] = []  # forwarded (and so charged) only once complete
    try:
        async with started.stack:
            try:
                received = [p async for p in started.answered.pieces()]
                pieces = [p for p in received if p.index < _choices(started)]
            except UpstreamError as exc:
                raise routing_error(exc) from exc
            finally:
                usage = _settle(started, forwarded_text(pieces))
            _kept(started, pieces, usage)
            by_choice = [[p for p in pieces if p.index == i] for i in range(_choices(started))]
            return [joined(choice) for choice in by_choice], usage
    except ApiError as exc:
        exc.headers.update(started.headers)
        raise


async def answer(started: Started, render: Renderer, stream: bool) -> Response:
    """The answer to a text route: if ``stream``, server-sent events as the tokens come;
    else the whole answer once the text is complete. Both carry the call's headers."""
    if stream:
        return event_stream(started, render)
    answers, usage = await collect(started)
    wholes = [
        render.whole(answer, reason, usage)
        for answer, reason in zip(answers, _finish_reasons(started), strict=True)
    ]
    body = wholes[0] | {
        "choices": [c | {"index": i} for i, w in enumerate(wholes) for c in w["choices"]]
    }
    return JSONResponse(body, headers=started.headers)


class EventStream(StreamingResponse):
    """Server-sent ``events`` that end their call (``stack``) however the response ends. A
    client that hangs up while an event is being sent leaves the events suspended, and one
    that hangs up before the first leaves them unstarted: either way the call must be
    charged and its slot freed now, not whenever the garbage collector finalizes them, or
    never."""

    def __init__(
        self, events: AsyncGenerator[bytes, None], stack: AsyncExitStack, headers: dict[str, str]
    ) -> None:
        self._events = events
        self._stack = stack
        headers = headers | {"Cache-Control": "no-cache"}
        super().__init__(events, media_type="text/event-stream", headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with trio.CancelScope(shield=True):
                await self._events.aclose()
                # Empty once the events ran; else the call ends as one whose client left.
                with suppress(GeneratorExit):
                    await self._stack.__aexit__(GeneratorExit, GeneratorExit(), None)


def event_stream(started: Started, render: Renderer) -> StreamingResponse:
    """The streamed answer as a response: server-sent events, rate-limit headers included."""
    return EventStream(stream(started, render), started.stack, started.headers)


async def stream(started: Started, render: Renderer) -> AsyncGenerator[bytes, None]:
    """Server-sent events; leaving early (client gone) cancels the generation on the node.

    The call is recorded (its usage row on disk) before the closing events go out: a
    client that has read ``[DONE]`` has been charged, even if the gateway dies next. A
    call that ends early, the client gone or the node failed, is charged for the text
    forwarded so far.
    """
    forwarded: list[Piece] = []
    choices = _choices(started)
    async with started.stack:
        if started.generation is None:
            opener, failed = started.opener, None
            assert opener is not None, "a call waiting in the queue comes with its opener"
            try:
                async for comment in _waiting(started):
                    yield comment
                started.generation = await started.stack.enter_async_context(opener())
            except (NoPeerReady, UnknownModel, UpstreamError) as exc:
                failed = routing_error(exc)
            if failed is not None:  # the response has begun: the error goes as an event
                started.outcome.status = failed.status
                yield oa.sse(failed.body)
                yield oa.sse("[DONE]")
                return
            started.outcome.peer_id = started.answered.peer_id
        try:
            for index in range(choices):
                for event in render.opening():
                    yield oa.sse(as_choice(event, index))
            async for piece in started.answered.pieces():
                if piece.index >= choices:
                    continue  # a choice no one asked for
                forwarded.append(piece)
                for event in render.piece(piece):
                    yield oa.sse(as_choice(event, piece.index))
        except UpstreamError as exc:
            started.outcome.status = 502
            closing = [oa.error_body(502, upstream_message(exc), exc.code.value.lower())]
        else:
            closing = []
        finally:
            usage = _settle(started, forwarded_text(forwarded))
    if not closing:
        _kept(started, forwarded, usage)
        closing = render.closing(_finish_reasons(started), usage)
    for event in closing:
        yield oa.sse(event)
    yield oa.sse("[DONE]")
