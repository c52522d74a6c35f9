"""``/v1/completions``: OpenAI's legacy text completions, plain and streamed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from gateway.api import openai_api as oa
from gateway.api.auth import User
from gateway.api.bodies import json_body, parse
from gateway.api.cached import respond
from gateway.api.errors import ApiError
from gateway.api.inference import Renderer
from protocols import GenerateParams


def install(app: FastAPI) -> None:
    @app.post("/v1/completions", openapi_extra=json_body(app, oa.CompletionRequest))
    async def completions(request: Request, claims: User) -> Response:
        body = await parse(request, oa.CompletionRequest, any_type=True)  # behind a token
        try:
            prompt = body.text()
            params = GenerateParams(prompt=prompt, max_tokens=body.max_tokens, **body.sampling())
        except ValueError as exc:
            raise ApiError(400, str(exc), "invalid_request") from exc
        id_ = f"cmpl-{uuid.uuid4().hex[:24]}"
        render = _TextChunks(id_, body.model, body.include_usage(), prompt if body.echo else "")
        return await respond(request, claims, params, "completion", render, body.stream)


@dataclass
class _TextChunks(Renderer):
    prefix: str = ""  # the prompt, echoed before the answer

    def whole(self, text: str, finish_reason: str, usage: dict[str, int]) -> dict[str, Any]:
        return oa.text_completion(self.id, self.model, self.prefix + text, finish_reason, usage)

    def opening(self) -> list[dict[str, Any]]:
        return [oa.text_completion(self.id, self.model, self.prefix, None)] if self.prefix else []

    def piece(self, text: str) -> dict[str, Any]:
        return oa.text_completion(self.id, self.model, text, None)

    def finish(self, finish_reason: str) -> dict[str, Any]:
        return oa.text_completion(self.id, self.model, "", finish_reason)

    def usage(self, usage: dict[str, int]) -> dict[str, Any]:
        return oa.text_completion(self.id, self.model, "", None, usage) | {"choices": []}
