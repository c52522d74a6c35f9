"""The inference routes served beside FastAPI: the same answers and checks, without it."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from gateway.api import chat as chat_api
from tests.unit.gateway.api.test_http import FakeBackend, auth, chat, http, make_app


@pytest.fixture
def inner_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths FastAPI itself was asked to serve."""
    seen: list[str] = []
    original = FastAPI.__call__

    async def counted(self: FastAPI, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(f"{scope['method']} {scope['path']}")
        await original(self, scope, receive, send)

    monkeypatch.setattr(FastAPI, "__call__", counted)
    return seen


async def test_chat_and_completions_are_answered_without_fastapi(inner_calls: list[str]) -> None:
    async with http(make_app(FakeBackend())) as client:
        reply = await client.post("/v1/chat/completions", json=chat(), headers=auth())
        assert reply.json()["choices"][0]["message"]["content"] == "Hello there world"
        body = {"model": "echo", "prompt": "one two"}
        reply = await client.post("/v1/completions", json=body, headers=auth())
        assert reply.json()["choices"][0]["text"] == "one two"
        assert (await client.get("/v1/models", headers=auth())).status_code == 200
    assert inner_calls == ["GET /v1/models"]


async def test_other_methods_on_the_path_go_to_the_app(inner_calls: list[str]) -> None:
    async with http(make_app(FakeBackend())) as client:
        reply = await client.get("/v1/chat/completions", headers=auth())
    assert reply.status_code == 405
    assert inner_calls == ["GET /v1/chat/completions"]


async def test_refusals_keep_the_error_shape_and_are_counted() -> None:
    app = make_app(FakeBackend())
    async with http(app) as client:
        reply = await client.post("/v1/chat/completions", json=chat())
        assert reply.status_code == 401
        assert reply.json()["error"]["code"] == "invalid_api_key"
        assert reply.json()["error"]["request_id"] == reply.headers["x-request-id"]
        reply = await client.post("/v1/chat/completions", json=chat("nope"), headers=auth())
        assert reply.status_code == 404
        metrics = (await client.get("/metrics")).text
    for status in ("401", "404"):
        labels = f'method="POST",route="/v1/chat/completions",status="{status}"'
        assert f"bitinglip_gateway_http_request_duration_seconds_count{{{labels}}} 1.0" in metrics


async def test_a_handler_that_fails_is_a_500_and_the_gateway_keeps_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(request: Any, claims: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(chat_api, "chat_completions", broken)
    async with http(make_app(FakeBackend())) as client:
        reply = await client.post("/v1/chat/completions", json=chat(), headers=auth())
        assert reply.status_code == 500
        assert reply.json()["error"]["message"] == "internal error"
        body = {"model": "echo", "prompt": "still here"}
        reply = await client.post("/v1/completions", json=body, headers=auth())
        assert reply.json()["choices"][0]["text"] == "still here"
