"""Text routes answered through the response cache (``gateway.api.response_cache``).

``respond`` is what a text route does with its parameters: a deterministic call whose
answer is kept is answered from it, else routed to a node and its answer kept. A hit is
still a call: the meters admit it (it counts a request against the rate limit) and record
it, charged the plan's ``cache_hit_percent`` of the tokens the answer first took (none by
default). Every cacheable answer says which it was in ``X-Cache``: ``hit``, ``miss``, or
``bypass`` when the caller sent ``Cache-Control: no-cache`` (the answer is kept anyway,
unless it also said ``no-store``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from functools import partial

import trio
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

import keys
from gateway.accounts.metering import rate_headers
from gateway.api import openai_api as oa
from gateway.api.inference import NODE_HEADER, Renderer, answer, joined, routed, start
from gateway.api.response_cache import Answer, cache_key, deterministic
from gateway.api.services import Services, services
from protocols import GenerateParams

CACHE_HEADER = "X-Cache"
CACHED_NODE = "cache"  # the node a hit names, in its header and its usage row


async def respond(
    request: Request,
    claims: keys.Claims,
    params: GenerateParams,
    kind: str,
    render: Renderer,
    stream: bool,
) -> Response:
    """Answer a text call from the cache if it may be, else from a node."""
    s = services(request)
    key = _key(s, claims, params, kind)
    if key is None:
        return await answer(await start(request, claims, params, kind, stream), render, stream)
    directives = {d.strip().lower() for d in request.headers.get("cache-control", "").split(",")}
    bypass = bool(directives & {"no-cache", "no-store"})
    if not bypass and s.cache is not None and (hit := s.cache.get(key)) is not None:
        s.metrics.response_cache.labels("hit").inc()
        return await _replay(request, claims, params, kind, hit, render, stream)
    result = "bypass" if bypass else "miss"
    s.metrics.response_cache.labels(result).inc()
    started = await start(request, claims, params, kind, stream)
    if s.cache is not None and "no-store" not in directives:
        started.keep = partial(s.cache.put, key)
    started.headers[CACHE_HEADER] = result
    return await answer(started, render, stream)


def _key(s: Services, claims: keys.Claims, params: GenerateParams, kind: str) -> str | None:
    """The call's cache key; None if it is not to be cached. Several choices are not: an
    entry keeps one answer."""
    if s.cache is None or not deterministic(params) or not s.plan_of(claims.sub).response_cache:
        return None
    if params.n > 1:
        return None
    owner = "*" if s.cache_shared else claims.sub.casefold()
    return cache_key(owner, kind, s.revision(params.model), params)


async def _replay(
    request: Request,
    claims: keys.Claims,
    params: GenerateParams,
    kind: str,
    hit: Answer,
    render: Renderer,
    stream: bool,
) -> Response:
    s = services(request)
    percent = s.plan_of(claims.sub).cache_hit_percent
    prompt = hit.prompt_tokens * percent // 100
    completion = hit.completion_tokens * percent // 100
    stack = AsyncExitStack()
    admitted = routed(request, claims, params.model, kind, tokens=prompt + completion)
    outcome = await stack.enter_async_context(admitted)
    outcome.peer_id = CACHED_NODE
    outcome.prompt_tokens = prompt
    outcome.completion_tokens = completion
    headers = {NODE_HEADER: CACHED_NODE, CACHE_HEADER: "hit"} | rate_headers(s.meters, claims)
    usage = oa.usage(hit.prompt_tokens, hit.completion_tokens)
    if not stream:
        body = render.whole(joined(list(hit.pieces)), hit.finish_reason, usage)
        return _ThenRecord(JSONResponse(body, headers=headers), stack)
    events = _events(hit, render, usage)
    headers["Cache-Control"] = "no-cache"
    streamed = StreamingResponse(events, media_type="text/event-stream", headers=headers)
    return _ThenRecord(streamed, stack)


class _ThenRecord(Response):
    """``response``, and then, however sending it ended, the end of the call's metering.
    A hit's usage row is written after its answer has gone out: waiting for the database
    would take most of a hit's time, and a gateway that dies in between loses the row of a
    call that cost no tokens (unless the plan charges hits)."""

    def __init__(self, response: Response, stack: AsyncExitStack) -> None:
        self._response = response
        self._stack = stack
        self.status_code = response.status_code
        self.raw_headers = response.raw_headers
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._response(scope, receive, send)
        finally:
            with trio.CancelScope(shield=True):
                await self._stack.aclose()


async def _events(hit: Answer, render: Renderer, usage: dict[str, int]) -> AsyncIterator[bytes]:
    """The answer's chunks as they first came, as server-sent events."""
    for event in render.opening():
        yield oa.sse(event)
    for piece in hit.pieces:
        for event in render.piece(piece):
            yield oa.sse(event)
    for event in render.closing([hit.finish_reason], usage):
        yield oa.sse(event)
    yield oa.sse("[DONE]")
