"""``/health``, ``/v1/models`` and ``/v1/chat/completions`` (plain and streamed)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

import keys
from gateway.api import openai_api as oa
from gateway.api import vision
from gateway.api.auth import User
from gateway.api.bodies import json_body, parse
from gateway.api.cached import respond
from gateway.api.errors import NODE_FIELDS, ApiError
from gateway.api.inference import Renderer, answer
from gateway.api.services import services
from gateway.routing.router import Piece
from protocols import ChatMessage, GenerateParams, ToolCall, assembled


def install(app: FastAPI) -> None:
    @app.get("/health")
    async def get_health(request: Request) -> dict[str, Any]:
        s = services(request)
        # Routable models only: a model whose nodes are all loading cannot answer yet.
        routable = sorted(
            model
            for model, peers in s.backend.serving().items()
            if any(p["state"] == "ready" and p["healthy"] for p in peers)
        )
        return {"status": "ok", "peer_id": s.peer_id, "models": routable} | s.health()

    @app.get("/v1/models")
    async def list_models(request: Request, claims: User) -> dict[str, Any]:
        serving = services(request).backend.serving()
        return {"object": "list", "data": [model_entry(m, p) for m, p in sorted(serving.items())]}

    @app.post("/v1/chat/completions", openapi_extra=json_body(app, oa.ChatCompletionRequest))
    async def chat_route(request: Request, claims: User) -> Response:
        return await chat_completions(request, claims)


async def chat_completions(request: Request, claims: keys.Claims) -> Response:
    """``POST /v1/chat/completions``; served by ``gateway.api.lean``, documented above."""
    body = await parse(request, oa.ChatCompletionRequest, any_type=True)  # behind a token
    if (old := body.replaced()) is not None:
        new = oa.REPLACED_FIELDS[old]
        raise ApiError(400, f"{old} is not supported: send {new}", "invalid_request", old)
    params = _params(body)
    render = _ChatChunks(oa.completion_id(), body.model, body.include_usage())
    started = await vision.start_if_shown(request, claims, body, params.engine_field())
    if started is not None:
        return await answer(started, render, body.stream)
    return await respond(request, claims, params, "chat", render, body.stream)


def model_entry(model: str, peers: list[dict[str, Any]]) -> dict[str, Any]:
    """One model of ``/v1/models``: OpenAI's Model object, with the task, what the model can
    do on any of its peers (``capabilities``) and, for an embedding model, its vector size."""
    capabilities: dict[str, bool] = {}
    for peer in peers:
        for name, able in peer.get("capabilities", {}).items():
            capabilities[name] = capabilities.get(name, False) or able
    sizes = [p["dimensions"] for p in peers if "dimensions" in p]
    return {
        "id": model,
        "object": "model",
        "created": 0,
        "owned_by": "bitinglip",
        "task": next((p["task"] for p in peers if "task" in p), None),
        "capabilities": capabilities,
        "peers": peers,
    } | ({"dimensions": max(sizes)} if sizes else {})


@dataclass
class _ChatChunks(Renderer):
    created: int = field(default_factory=lambda: int(time.time()))

    def whole(self, answer: Piece, finish_reason: str, usage: dict[str, int]) -> dict[str, Any]:
        message = oa.assistant_message(answer.text, assembled(answer.tool_calls))
        logprobs = oa.chat_logprobs(answer.logprobs) if answer.logprobs else None
        return oa.chat_completion(
            self.id, self.model, message, finish_reason, usage, self.created, logprobs
        )

    def opening(self) -> list[dict[str, Any]]:
        return [oa.chunk(self.id, self.model, self.created, {"role": "assistant", "content": ""})]

    def piece(self, piece: Piece) -> list[dict[str, Any]]:
        events = []
        if piece.text or piece.logprobs:
            logprobs = oa.chat_logprobs(piece.logprobs) if piece.logprobs else None
            delta = {"content": piece.text}
            events.append(oa.chunk(self.id, self.model, self.created, delta, logprobs=logprobs))
        for part in piece.tool_calls:
            for call in oa.tool_call_deltas(part):
                events.append(oa.chunk(self.id, self.model, self.created, {"tool_calls": [call]}))
        return events

    def finish(self, finish_reason: str) -> dict[str, Any]:
        return oa.chunk(self.id, self.model, self.created, {}, finish_reason)

    def usage(self, usage: dict[str, int]) -> dict[str, Any]:
        return oa.chunk(self.id, self.model, self.created, {}, usage_=usage)


def _params(body: oa.ChatCompletionRequest) -> GenerateParams:
    # "developer" is OpenAI's newer name for the system role.
    messages = [
        ChatMessage(
            "system" if m.role == "developer" else m.role,
            m.text(),
            [ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or []],
            m.tool_call_id,
        )
        for m in body.messages
    ]
    try:
        return GenerateParams(
            messages=messages,
            max_tokens=body.max_completion_tokens or body.max_tokens or 256,
            n=body.n,
            **body.sampling(),
            **body.extras(),
        )
    except ValueError as exc:
        raise ApiError(400, str(exc), "invalid_request", _field(str(exc))) from exc


def _field(message: str) -> str | None:
    """The request field a refusal names first ("tools: ..."), if it names one."""
    named = message.partition(":")[0]
    return named if named in NODE_FIELDS else None
