"""``/v1/completions``: OpenAI's legacy text completions, plain and streamed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

import keys
from gateway.api import openai_api as oa
from gateway.api.auth import User
from gateway.api.bodies import json_body, parse
from gateway.api.cached import respond
from gateway.api.errors import ApiError
from gateway.api.inference import Renderer
from gateway.routing.router import Piece
from protocols import GenerateParams


def install(app: FastAPI) -> None:
    @app.post("/v1/completions", openapi_extra=json_body(app, oa.CompletionRequest))
    async def completions_route(request: Request, claims: User) -> Response:
        return await completions(request, claims)


async def completions(request: Request, claims: keys.Claims) -> Response:
    """``POST /v1/completions``; served by ``gateway.api.lean``, documented above."""
    body = await parse(request, oa.CompletionRequest, any_type=True)  # behind a token
    try:
        prompt = body.text()
        params = GenerateParams(
            prompt=prompt,
            max_tokens=body.max_tokens,
            n=body.n,
            logprobs=body.logprobs is not None,
            top_logprobs=body.logprobs or 0,
            **body.sampling(),
        )
    except ValueError as exc:
        raise ApiError(400, str(exc), "invalid_request") from exc
    id_ = f"cmpl-{uuid.uuid4().hex[:24]}"
    render = _TextChunks(id_, body.model, body.include_usage(), prompt if body.echo else "")
    return await respond(request, claims, params, "completion", render, body.stream)


@dataclass
class _TextChunks(Renderer):
    prefix: str = ""  # the prompt, echoed before the answer
    offset: int = -1  # where the next token's text starts in the answer; set at first use

    def whole(self, answer: Piece, finish_reason: str, usage: dict[str, int]) -> dict[str, Any]:
        text = self.prefix + answer.text
        logprobs = self._logprobs(answer)
        return oa.text_completion(self.id, self.model, text, finish_reason, usage, logprobs)

    def opening(self) -> list[dict[str, Any]]:
        return [oa.text_completion(self.id, self.model, self.prefix, None)] if self.prefix else []

    def piece(self, piece: Piece) -> list[dict[str, Any]]:
        if not piece.text and not piece.logprobs:
            return []
        logprobs = self._logprobs(piece)
        return [oa.text_completion(self.id, self.model, piece.text, None, None, logprobs)]

    def _logprobs(self, piece: Piece) -> dict[str, Any] | None:
        if not piece.logprobs:
            return None
        if self.offset < 0:
            self.offset = len(self.prefix)
        shown = oa.text_logprobs(piece.logprobs, self.offset)
        self.offset += sum(len(lp.token) for lp in piece.logprobs)
        return shown

    def finish(self, finish_reason: str) -> dict[str, Any]:
        return oa.text_completion(self.id, self.model, "", finish_reason)

    def usage(self, usage: dict[str, int]) -> dict[str, Any]:
        return oa.text_completion(self.id, self.model, "", None, usage) | {"choices": []}
