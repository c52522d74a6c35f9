"""``/v1/completions``: OpenAI's legacy text completions, plain and streamed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from gateway.api import openai_api as oa
from gateway.api.auth import User
from gateway.api.bodies import json_body, parse
from gateway.api.errors import ApiError
from gateway.api.inference import collect, event_stream, start
from protocols import GenerateParams


def install(app: FastAPI) -> None:
    @app.post(
        "/v1/completions",
        response_model=None,
        openapi_extra=json_body(app, oa.CompletionRequest),
    )
    async def completions(request: Request, claims: User) -> JSONResponse | StreamingResponse:
        body = await parse(request, oa.CompletionRequest)
        try:
            prompt = body.text()
            params = GenerateParams(
                model=body.model,
                prompt=prompt,
                max_tokens=body.max_tokens,
                temperature=body.temperature,
                top_p=body.top_p,
                stop=body.stops(),
                seed=body.seed,
                stream=body.stream,
            )
        except ValueError as exc:
            raise ApiError(400, str(exc), "invalid_request") from exc
        started = await start(request, claims, params, "completion")
        id_ = f"cmpl-{uuid.uuid4().hex[:24]}"
        prefix = prompt if body.echo else ""
        if not body.stream:
            text = await collect(started)
            finish = str(started.generation.usage.get("finish_reason", "stop"))
            usage = oa.usage(started.generation.usage)
            return JSONResponse(
                oa.text_completion(id_, body.model, prefix + text, finish, usage),
                headers=started.headers,
            )
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        render = _TextChunks(id_, body.model, prefix, include_usage)
        return event_stream(started, render)


@dataclass
class _TextChunks:
    id: str
    model: str
    prefix: str
    include_usage: bool

    def opening(self) -> list[dict[str, Any]]:
        return [oa.text_completion(self.id, self.model, self.prefix, None)] if self.prefix else []

    def piece(self, text: str) -> dict[str, Any]:
        return oa.text_completion(self.id, self.model, text, None)

    def closing(self, finish_reason: str, usage: dict[str, int]) -> list[dict[str, Any]]:
        events = [oa.text_completion(self.id, self.model, "", finish_reason)]
        if self.include_usage:
            last = oa.text_completion(self.id, self.model, "", None, usage)
            last["choices"] = []
            events.append(last)
        return events
