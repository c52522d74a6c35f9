"""``/health``, ``/v1/models`` and ``/v1/chat/completions`` (plain and streamed)."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from gateway import openai_api as oa
from gateway.auth import User
from gateway.bodies import json_body, parse
from gateway.errors import ApiError, routing_error
from gateway.metering import Outcome, metered, rate_headers
from gateway.router import Generation, NoPeerReady, UnknownModel, UpstreamError
from gateway.services import services
from protocols import ChatMessage, GenerateParams

NODE_HEADER = "X-BitingLip-Node"


def install(app: FastAPI) -> None:
    @app.get("/health")
    async def get_health(request: Request) -> dict[str, Any]:
        s = services(request)
        return {"status": "ok", "peer_id": s.peer_id, "models": sorted(s.backend.serving())} | (
            s.health()
        )

    @app.get("/v1/models")
    async def list_models(request: Request, claims: User) -> dict[str, Any]:
        serving = services(request).backend.serving()
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "bitinglip", "peers": peers}
                for m, peers in sorted(serving.items())
            ],
        }

    @app.post(
        "/v1/chat/completions",
        response_model=None,
        openapi_extra=json_body(app, oa.ChatCompletionRequest),
    )
    async def chat_completions(request: Request, claims: User) -> JSONResponse | StreamingResponse:
        s = services(request)
        body = await parse(request, oa.ChatCompletionRequest)
        params = _params(body)
        stack = AsyncExitStack()
        try:
            outcome = await stack.enter_async_context(metered(s.meters, claims, body.model, "chat"))
            try:
                generation = await stack.enter_async_context(
                    s.backend.generate(params, s.request_timeout)
                )
            except (UnknownModel, NoPeerReady, UpstreamError) as exc:
                raise routing_error(exc) from exc
        except BaseException:
            await stack.__aexit__(*sys.exc_info())
            raise
        outcome.peer_id = generation.peer_id
        headers = {NODE_HEADER: generation.peer_id} | rate_headers(s.meters, claims)
        id_, created = oa.completion_id(), int(time.time())
        if not body.stream:
            try:
                async with stack:
                    try:
                        text = await generation.text()
                    except UpstreamError as exc:
                        raise routing_error(exc) from exc
                    _count(outcome, generation)
            except ApiError as exc:
                exc.headers.update(headers)
                raise
            return JSONResponse(
                oa.chat_completion(id_, body.model, text, generation.usage, created),
                headers=headers,
            )
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _stream(generation, outcome, stack, id_, body.model, created, include_usage)
        return StreamingResponse(
            events, media_type="text/event-stream", headers=headers | {"Cache-Control": "no-cache"}
        )


def _count(outcome: Outcome, generation: Generation) -> None:
    outcome.prompt_tokens = int(generation.usage.get("prompt_tokens", 0))
    outcome.completion_tokens = int(generation.usage.get("completion_tokens", 0))


def _params(body: oa.ChatCompletionRequest) -> GenerateParams:
    # "developer" is OpenAI's newer name for the system role.
    messages = [
        ChatMessage("system" if m.role == "developer" else m.role, m.text()) for m in body.messages
    ]
    try:
        return GenerateParams(
            model=body.model,
            messages=messages,
            max_tokens=body.max_completion_tokens or body.max_tokens or 256,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=body.stops(),
            seed=body.seed,
        )
    except ValueError as exc:
        raise ApiError(400, str(exc), "invalid_request") from exc


async def _stream(
    generation: Generation,
    outcome: Outcome,
    stack: AsyncExitStack,
    id_: str,
    model: str,
    created: int,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    async with stack:  # leaving early (client gone) cancels the generation on the node
        yield oa.sse(oa.chunk(id_, model, created, {"role": "assistant", "content": ""}))
        try:
            async for piece in generation.deltas():
                if piece:
                    yield oa.sse(oa.chunk(id_, model, created, {"content": piece}))
        except UpstreamError as exc:
            outcome.status = 502
            yield oa.sse(oa.error_body(502, str(exc), exc.code.value.lower()))
            yield oa.sse("[DONE]")
            return
        _count(outcome, generation)
        reason = str(generation.usage.get("finish_reason", "stop"))
        yield oa.sse(oa.chunk(id_, model, created, {}, reason))
        if include_usage:
            yield oa.sse(oa.chunk(id_, model, created, {}, usage_=oa.usage(generation.usage)))
        yield oa.sse("[DONE]")
