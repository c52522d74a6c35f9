"""Request bodies a client can make hostile: whatever their shape, the answer is a 4xx with
a sentence, never a 500."""

from __future__ import annotations

import pytest

from tests.unit.gateway.api.test_http import FakeBackend, assert_error, auth, http, make_app

DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", DEEP),
        ("/v1/completions", DEEP),
        ("/v1/chat/completions", b'{"model": "echo", "messages": ' + DEEP + b"}"),
        ("/v1/images/generations", b'{"model": "sd", "prompt": ' + DEEP + b"}"),
    ],
)
async def test_deeply_nested_json_is_400(path: str, body: bytes) -> None:
    backend = FakeBackend()
    async with http(make_app(backend)) as client:
        response = await client.post(path, content=body, headers=auth())
    message = assert_error(response, 400, "invalid_request_error", "invalid_json")
    assert message == "request body is nested too deeply"
    assert backend.calls == []
