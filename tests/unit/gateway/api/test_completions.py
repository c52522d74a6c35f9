"""``/v1/completions`` in-process: plain, streamed, echo, errors. The openai client against
a real swarm is in test_openai_e2e."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.gateway.api.test_http import FakeBackend, auth, http, make_app, sse_events


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "echo", "prompt": "one two three", "max_tokens": 8} | extra


async def test_plain_completion_has_text_and_usage(backend: FakeBackend) -> None:
    async with http(make_app(backend)) as client:
        reply = await client.post("/v1/completions", json=body(), headers=auth())
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["object"] == "text_completion"
    assert data["choices"][0]["text"] == "one two three"
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["completion_tokens"] == 3
    params, _ = backend.calls[0]
    assert params.prompt == "one two three" and params.messages is None


async def test_echo_prefixes_the_prompt(backend: FakeBackend) -> None:
    async with http(make_app(backend)) as client:
        reply = await client.post("/v1/completions", json=body(echo=True), headers=auth())
    assert reply.json()["choices"][0]["text"] == "one two three" * 2


async def test_streamed_completion(backend: FakeBackend) -> None:
    options = {"stream": True, "stream_options": {"include_usage": True}}
    async with http(make_app(backend)) as client:
        reply = await client.post("/v1/completions", json=body(**options), headers=auth())
    events = sse_events(reply.text)
    assert events[-1] == "[DONE]"
    texts = [e["choices"][0]["text"] for e in events[:-3]]
    assert "".join(texts) == "one two three"
    assert events[-3]["choices"][0]["finish_reason"] == "stop"
    assert events[-2]["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 17}, "n"),
    ],
)
async def test_bad_requests_name_the_field(
    backend: FakeBackend, extra: dict[str, Any], field: str
) -> None:
    async with http(make_app(backend)) as client:
        reply = await client.post("/v1/completions", json=body(**extra), headers=auth())
    assert reply.status_code == 400
    assert field in reply.json()["error"]["message"]


async def test_unknown_model_is_404(backend: FakeBackend) -> None:
    async with http(make_app(backend)) as client:
        reply = await client.post("/v1/completions", json=body(model="nope"), headers=auth())
    assert reply.status_code == 404
