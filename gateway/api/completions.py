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
from gateway.api.inference import answer, start
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
            params = GenerateParams(prompt=prompt, max_tokens=body.max_tokens, **body.sampling())
        except ValueError as exc:
            raise ApiError(400, str(exc), "invalid_request") from exc
        started = await start(request, claims, params, "completion")
        id_ = f"cmpl-{uuid.uuid4().hex[:24]}"
        prefix = prompt if body.echo else ""

        def whole(text: str) -> dict[str, Any]:
            finish = str(started.generation.usage.get("finish_reason", "stop"))
            usage = oa.usage(started.generation.usage)
            return oa.text_completion(id_, body.model, prefix + text, finish, usage)

        render = _TextChunks(id_, body.model, prefix, body.include_usage())
        return await answer(started, render if body.stream else None, whole)


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
