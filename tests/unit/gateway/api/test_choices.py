"""Several choices (``n``) in chats and completions: the API over a router whose node is
reached over in-memory streams and runs the torch-free echo model (real processes and a
real model: tests/integration/test_choices_swarm.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.accounts.limits import Plan, Plans
from gateway.api.app import create_app
from gateway.api.auth import Authenticator
from gateway.api.services import Services
from node.worker.runners import EchoRunner
from tests.unit.gateway.accounts.test_accounts import gateway
from tests.unit.gateway.api.test_audio import AUTH, KEY
from tests.unit.gateway.api.test_images import RecordingMeter
from tests.unit.gateway.routing.test_router import node, swarm_of

SAID = "one two three"


@pytest.fixture
def meter() -> RecordingMeter:
    return RecordingMeter()


@pytest.fixture
async def client(meter: RecordingMeter) -> AsyncIterator[httpx.AsyncClient]:
    async with swarm_of({"peer-a": node({"echo": EchoRunner()})}) as router:
        services = Services(backend=router, auth=Authenticator(KEY.public_key()), meters=[meter])
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "echo", "messages": [{"role": "user", "content": SAID}]} | extra


def events(response: httpx.Response) -> list[dict[str, Any]]:
    lines = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


async def test_a_chat_with_three_choices(client: httpx.AsyncClient, meter: RecordingMeter) -> None:
    response = await client.post(
        "/v1/chat/completions", json=chat(n=3, max_tokens=10), headers=AUTH
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert {c["message"]["content"] for c in body["choices"]} == {SAID}
    assert {c["finish_reason"] for c in body["choices"]} == {"stop"}
    assert body["usage"]["completion_tokens"] == 3 * 3  # every choice's tokens
    [outcome] = meter.outcomes
    assert outcome.completion_tokens == 9
    assert outcome.budget_tokens >= 3 * 10  # each choice may write max_tokens


async def test_streamed_choices_carry_their_index(client: httpx.AsyncClient) -> None:
    asked = chat(n=2, stream=True, stream_options={"include_usage": True})
    response = await client.post("/v1/chat/completions", json=asked, headers=AUTH)
    texts: dict[int, str] = {}
    roles: list[int] = []
    finished: dict[int, str] = {}
    for event in events(response)[:-1]:
        [choice] = event["choices"]
        delta, index = choice["delta"], choice["index"]
        if "role" in delta:
            roles.append(index)
        texts[index] = texts.get(index, "") + delta.get("content", "")
        if choice["finish_reason"]:
            finished[index] = choice["finish_reason"]
    assert roles == [0, 1]
    assert texts == {0: SAID, 1: SAID}
    assert finished == {0: "stop", 1: "stop"}
    usage = events(response)[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 6


async def test_completions_with_choices_whole_and_streamed(client: httpx.AsyncClient) -> None:
    body = {"model": "echo", "prompt": SAID, "n": 2, "max_tokens": 8, "echo": True}
    whole = (await client.post("/v1/completions", json=body, headers=AUTH)).json()
    assert [(c["index"], c["text"]) for c in whole["choices"]] == [(0, SAID * 2), (1, SAID * 2)]
    streamed = await client.post("/v1/completions", json=body | {"stream": True}, headers=AUTH)
    texts: dict[int, str] = {}
    for event in events(streamed):
        for choice in event["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    assert texts == {0: SAID + SAID, 1: SAID + SAID}


async def test_n_above_the_plan_is_refused(tmp_path: Path) -> None:
    plans = Plans({"default": Plan(max_choices=2)})
    async with gateway(tmp_path, plans=plans) as g:
        auth = g.operator_token("alice")
        refused = await g.client.post("/v1/chat/completions", json=chat(n=3), headers=auth)
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["param"] == "n" and "n is at most 2 on plan 'default'" in error["message"]
        assert (
            await g.client.post("/v1/chat/completions", json=chat(n=2), headers=auth)
        ).status_code == 200
        me = (await g.client.get("/v1/auth/me", headers=auth)).json()
        assert me["plan"]["max_choices"] == 2
