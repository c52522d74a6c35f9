"""The flow every inference route shares: meter, route, map errors, add headers.

``routed`` is that pipeline for text and image routes alike. Text routes then answer
whole or as SSE: chat and legacy completions differ only in request shape and how they
render text, so they hand a ``Renderer`` to ``stream`` and keep nothing else of their own.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

import keys
from gateway.accounts.errors import Refused
from gateway.accounts.metering import Outcome, metered, rate_headers
from gateway.api import openai_api as oa
from gateway.api.errors import ApiError, refusal, routing_error
from gateway.api.services import Services, services
from gateway.routing.router import Generation, NoPeerReady, UnknownModel, UpstreamError
from protocols import GenerateParams, VisionParams

NODE_HEADER = "X-BitingLip-Node"


@dataclass
class Started:
    """A call that a node has begun to answer; ``stack`` ends it (and its metering)."""

    generation: Generation
    outcome: Outcome
    stack: AsyncExitStack
    headers: dict[str, str]


@dataclass
class Renderer:
    """How a text route words its answer: ``whole``, or as a stream of events (``opening``,
    a ``piece`` per delta, ``closing``); a stream ends with usage only if it was asked for."""

    id: str
    model: str
    include_usage: bool

    def whole(self, text: str, result: dict[str, Any]) -> dict[str, Any]:
        """The complete answer, given the node's end data (finish reason and token counts)."""
        raise NotImplementedError

    def opening(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def piece(self, text: str) -> dict[str, Any]:
        raise NotImplementedError

    def finish(self, finish_reason: str) -> dict[str, Any]:
        raise NotImplementedError

    def usage(self, usage: dict[str, int]) -> dict[str, Any]:
        raise NotImplementedError

    def closing(self, finish_reason: str, usage: dict[str, int]) -> list[dict[str, Any]]:
        events = [self.finish(finish_reason)]
        if self.include_usage:
            events.append(self.usage(usage))
        return events


@asynccontextmanager
async def routed(
    request: Request, claims: keys.Claims, model: str, kind: str
) -> AsyncIterator[Outcome]:
    """Meter → route → error → headers: the call is admitted by the meters and recorded
    however it ends; a refusal or a routing failure becomes an HTTP error, and every HTTP
    error carries the caller's rate-limit headers."""
    meters = services(request).meters
    try:
        async with metered(meters, claims, model, kind) as outcome:
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
    request: Request, claims: keys.Claims, params: GenerateParams | VisionParams, kind: str
) -> Started:
    """Admit the call and route it to a node."""
    s = services(request)
    stack = AsyncExitStack()
    try:
        outcome = await stack.enter_async_context(routed(request, claims, params.model, kind))
        generation = await stack.enter_async_context(_open(s, params))
    except BaseException:
        # Let the meters see the failure (and its status) before it propagates.
        await stack.__aexit__(*sys.exc_info())
        raise
    outcome.peer_id = generation.peer_id
    headers = {NODE_HEADER: generation.peer_id} | rate_headers(s.meters, claims)
    return Started(generation, outcome, stack, headers)


def _open(
    s: Services, params: GenerateParams | VisionParams
) -> AbstractAsyncContextManager[Generation]:
    """A text generation, or a chat with pictures (which answers in text the same way)."""
    if isinstance(params, GenerateParams):
        return s.backend.generate(params, s.request_timeout)
    if s.media is None:
        raise ApiError(503, "this gateway does not route pictures", "no_peer_ready")
    return s.media.describe(params, s.request_timeout)


def _count(started: Started) -> dict[str, int]:
    usage = oa.usage(started.generation.usage)
    started.outcome.prompt_tokens = usage["prompt_tokens"]
    started.outcome.completion_tokens = usage["completion_tokens"]
    return usage


async def collect(started: Started) -> str:
    """The whole answer; failures become HTTP errors carrying the rate-limit headers."""
    try:
        async with started.stack:
            try:
                text = await started.generation.text()
            except UpstreamError as exc:
                raise routing_error(exc) from exc
            _count(started)
            return text
    except ApiError as exc:
        exc.headers.update(started.headers)
        raise


async def answer(started: Started, render: Renderer, stream: bool) -> Response:
    """The answer to a text route: if ``stream``, server-sent events as the tokens come;
    else the whole answer once the text is complete. Both carry the call's headers."""
    if stream:
        return event_stream(started, render)
    text = await collect(started)
    return JSONResponse(render.whole(text, started.generation.usage), headers=started.headers)


def event_stream(started: Started, render: Renderer) -> StreamingResponse:
    """The streamed answer as a response: server-sent events, rate-limit headers included."""
    return StreamingResponse(
        stream(started, render),
        media_type="text/event-stream",
        headers=started.headers | {"Cache-Control": "no-cache"},
    )


async def stream(started: Started, render: Renderer) -> AsyncIterator[bytes]:
    """Server-sent events; leaving early (client gone) cancels the generation on the node.

    The call is recorded (its usage row on disk) before the closing events go out: a
    client that has read ``[DONE]`` has been charged, even if the gateway dies next.
    """
    async with started.stack:
        for event in render.opening():
            yield oa.sse(event)
        try:
            async for piece in started.generation.deltas():
                if piece:
                    yield oa.sse(render.piece(piece))
        except UpstreamError as exc:
            started.outcome.status = 502
            closing = [oa.error_body(502, str(exc), exc.code.value.lower())]
        else:
            usage = _count(started)
            reason = str(started.generation.usage.get("finish_reason", "stop"))
            closing = render.closing(reason, usage)
    for event in closing:
        yield oa.sse(event)
    yield oa.sse("[DONE]")
