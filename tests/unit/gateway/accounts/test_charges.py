"""What a text call is charged: the node's counts checked against the request and the text
forwarded, and a call that ends early charged for what it streamed (a client hanging up
over a real socket, a node failing mid-answer), with the row read from the SQLite file."""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from gateway.accounts import charges
from gateway.accounts.charges import Charge, charge
from gateway.accounts.database import Store, UsageRecord
from gateway.routing.dispatch import Ticket
from gateway.routing.router import Generation
from node.p2p.rpc_client import Call
from protocols import (
    ChatMessage,
    Chunk,
    End,
    Error,
    ErrorCode,
    GenerateParams,
    Message,
    Tool,
    ToolCall,
)
from tests.chat_templates import FAMILIES, chat_template
from tests.conftest import served
from tests.unit.gateway.accounts.test_accounts import Gateway, gateway
from tests.unit.gateway.api.test_http import PEER, FakeBackend, chat, sse_events

PROMPT = GenerateParams(model="m", messages=[ChatMessage("user", "four words of prompt")])
BOUND = charges.prompt_bound(PROMPT)


def params(**changes: Any) -> GenerateParams:
    return GenerateParams(**{"model": "m", "messages": PROMPT.messages} | changes)


# --- the checks, on their own -------------------------------------------------------------


def test_a_finished_call_is_charged_what_the_node_counted() -> None:
    counted = {"prompt_tokens": 9, "completion_tokens": 3}
    assert charge(params(), counted, "one two three", True) == Charge(9, 3)


@pytest.mark.parametrize(
    ("counted", "expected"),
    [
        ({"prompt_tokens": -5, "completion_tokens": -1}, Charge(0, 0)),
        ({"prompt_tokens": 10**12, "completion_tokens": 3}, Charge(BOUND, 3)),
        ({"prompt_tokens": 9, "completion_tokens": 10**12}, Charge(9, 8)),  # max_tokens
        ({"prompt_tokens": True, "completion_tokens": "3"}, None),  # not numbers: estimated
    ],
)
def test_what_a_node_says_is_bounded(counted: dict[str, Any], expected: Charge | None) -> None:
    found = charge(params(max_tokens=8), counted, "one two three", True)
    assert found == (expected or Charge(charges.prompt_estimate(PROMPT), 5))


def test_completion_is_bounded_by_the_text_forwarded() -> None:
    claimed = {"prompt_tokens": 9, "completion_tokens": 5000}
    # Two bytes forwarded: at most those, the stop sequences and a few silent tokens.
    found = charge(params(max_tokens=8000, stop=["END"]), claimed, "hi", True)
    assert found == Charge(9, 2 + 3 + charges.SILENT_TOKENS)


def test_each_choice_may_write_max_tokens() -> None:
    claimed = {"prompt_tokens": 9, "completion_tokens": 10**6}
    text = "one two three " * 20
    assert charge(params(max_tokens=8, n=3), claimed, text, True) == Charge(9, 24)
    # Each choice's stop sequences and silent tokens are not forwarded.
    hidden = 3 * (3 + charges.SILENT_TOKENS)
    found = charge(params(max_tokens=8000, n=3, stop=["END"]), claimed, "hi", True)
    assert found == Charge(9, 2 + hidden)
    assert charges.budget(params(max_tokens=8, n=3)) == 24 + charges.prompt_estimate(PROMPT)


def test_a_call_that_forwarded_nothing_and_did_not_finish_costs_nothing() -> None:
    claimed = {"prompt_tokens": 9, "completion_tokens": 4}
    assert charge(params(), claimed, "", False) == Charge(0, 0)
    assert charge(params(), claimed, "", True) == Charge(9, 4)  # an empty answer still ran


def test_the_prompt_estimate_lies_between_the_words_and_the_bound() -> None:
    long = params(messages=[ChatMessage("user", "word " * 400)])
    assert 400 < charges.prompt_estimate(long) < charges.prompt_bound(long)
    assert charges.budget(long) == 256 + charges.prompt_estimate(long)


def _agent_turn() -> GenerateParams:
    """A second turn of an agent: long tool definitions, a call with long arguments and
    the tool's answer, around a short question (ids of 9 characters, as Mistral's)."""
    tools = [
        Tool(
            f"tool_{i}",
            "Looks things up. " * 40,
            {"type": "object", "properties": {f"p{j}": {"type": "string"} for j in range(20)}},
        )
        for i in range(4)
    ]
    call = ToolCall("abcdefghi", "tool_0", json.dumps({"p0": "x" * 1500}))
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "What is up?"),
        ChatMessage("assistant", "", [call]),
        ChatMessage("tool", "y" * 1500, tool_call_id="abcdefghi"),
    ]
    return params(messages=messages, tools=tools)


def _rendered(asked: GenerateParams, family: str) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    # Typed as one string; it gives the rendered conversations and their masks.
    rendered: Any = render_jinja_template(
        conversations=[[m.template_form() for m in asked.messages or []]],
        tools=[t.template_form() for t in asked.tools],
        chat_template=chat_template(family),
        add_generation_prompt=True,
        bos_token="<s>",
        eos_token="</s>",
    )
    return str(rendered[0][0])


@pytest.mark.parametrize("family", FAMILIES)
def test_tools_and_calls_count_towards_the_prompt(family: str) -> None:
    asked = _agent_turn()
    rendered = _rendered(asked, family)
    size = len(rendered.encode())
    # A byte-level tokenizer spends at most a token a byte: the bound holds whatever the
    # template, and would not if the tools and calls were left out.
    assert size <= charges.prompt_bound(asked)
    bare = params(messages=[replace(m, tool_calls=[]) for m in asked.messages or []])
    assert charges.prompt_bound(bare) < size
    # English and JSON run at 3 to 4 bytes a token, a run of spaces at one token: the
    # budget reserves no less.
    words = len(re.sub(r"\s+", " ", rendered).encode())
    assert charges.prompt_estimate(asked) >= words / 4 > charges.prompt_estimate(bare)


def test_a_schema_leaves_room_in_the_bound_only() -> None:
    schema = {"type": "object", "properties": {"a" * 500: {"type": "string"}}}
    asked = params(response_format="json_schema", json_schema=schema)
    assert charges.prompt_bound(asked) >= BOUND + 500
    assert charges.prompt_estimate(asked) == charges.prompt_estimate(PROMPT)


# --- over HTTP ----------------------------------------------------------------------------


class Scripted(FakeBackend):
    """``scripted`` streams the frames the test puts in ``frames``, as they come."""

    def __init__(self) -> None:
        super().__init__()
        self.send, self.receive = trio.open_memory_channel[Message](math.inf)
        self.done = trio.Event()

    @asynccontextmanager
    async def generate(
        self, params: GenerateParams, timeout: float, ticket: Ticket | None = None
    ) -> AsyncIterator[Generation]:
        if params.model != "scripted":
            async with super().generate(params, timeout) as generation:
                yield generation
            return
        call = Call(1, self.receive)
        first = await anext(call, None)
        try:
            yield Generation(PEER, call, first)
        finally:
            self.done.set()


def counted(text: str, completion: int, prompt: int = 7) -> Chunk:
    return Chunk(1, {"text": text, "prompt_tokens": prompt, "completion_tokens": completion})


async def rows(path: Path) -> list[UsageRecord]:
    """The usage rows as the SQLite file holds them, read on a connection of its own."""
    with Store.open(path) as store:
        return store.usage_records()


async def test_a_client_hanging_up_mid_stream_is_charged_for_what_it_was_sent(
    tmp_path: Path,
) -> None:
    backend = Scripted()
    async with gateway(tmp_path, backend=backend) as g:
        for i in range(1, 6):
            backend.send.send_nowait(counted(f" w{i}", i))
        # ... and the node goes on generating: no end frame comes.
        body = chat("scripted", stream=True, max_tokens=100)
        async with served(g.app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            request = client.build_request(
                "POST", "/v1/chat/completions", json=body, headers=g.operator_token("alice")
            )
            response = await client.send(request, stream=True)
            assert response.status_code == 200
            seen = 0
            async for line in response.aiter_lines():
                seen += '"content":" w' in line
                if seen == 5:
                    break
            await response.aclose()  # hangs up before [DONE]
            with trio.fail_after(30):
                await backend.done.wait()  # the gateway let go of the node's call
                while not await rows(tmp_path):
                    await trio.sleep(0.01)
    [row] = await rows(tmp_path)
    assert (row.model, row.status, row.prompt_tokens, row.completion_tokens) == (
        "scripted",
        499,
        7,
        5,
    )


async def test_a_node_failing_mid_stream_charges_what_was_streamed(tmp_path: Path) -> None:
    backend = Scripted()
    async with gateway(tmp_path, backend=backend) as g:
        frames: list[Message] = [
            counted("one", 1),
            counted(" two", 2),
            Error(1, ErrorCode.UNAVAILABLE, "gone"),
        ]
        for frame in frames:
            backend.send.send_nowait(frame)
        response = await g.client.post(
            "/v1/chat/completions",
            json=chat("scripted", stream=True),
            headers=g.operator_token("alice"),
        )
        events = sse_events(response.text)
        assert events[-2]["error"]["code"] == "unavailable"
        [row] = await g.store.call(g.store.usage_records)
    assert (row.status, row.prompt_tokens, row.completion_tokens) == (502, 7, 2)


async def test_a_node_without_counts_is_charged_an_estimate(tmp_path: Path) -> None:
    backend = Scripted()
    async with gateway(tmp_path, backend=backend) as g:
        backend.send.send_nowait(Chunk(1, {"text": "abcdef"}))
        backend.send.send_nowait(Error(1, ErrorCode.UNAVAILABLE, "gone"))
        await g.client.post(
            "/v1/chat/completions",
            json=chat("scripted", stream=True),
            headers=g.operator_token("alice"),
        )
        [row] = await g.store.call(g.store.usage_records)
    asked = GenerateParams(model="scripted", messages=[ChatMessage("user", "Hello there world")])
    assert (row.prompt_tokens, row.completion_tokens) == (charges.prompt_estimate(asked), 2)


@pytest.mark.parametrize("stream", [False, True])
async def test_absurd_counts_are_neither_charged_nor_shown(gw: Gateway, stream: bool) -> None:
    backend = gw.backend
    assert isinstance(backend, Scripted)
    lie = {"prompt_tokens": 10**9, "completion_tokens": 10**9, "finish_reason": "<b>x</b>"}
    frames: list[Message] = [Chunk(1, {"text": "x" * 100, **lie}), End(1, lie)]
    for frame in frames:
        backend.send.send_nowait(frame)
    body = chat("scripted", stream=stream, max_tokens=50, stream_options={"include_usage": True})
    response = await gw.client.post(
        "/v1/chat/completions", json=body, headers=gw.operator_token("alice")
    )
    asked = GenerateParams(model="scripted", messages=[ChatMessage("user", "Hello there world")])
    bound = charges.prompt_bound(asked)
    if stream:
        events = sse_events(response.text)
        usage, finish = events[-2]["usage"], events[-3]["choices"][0]["finish_reason"]
    else:
        usage, finish = response.json()["usage"], response.json()["choices"][0]["finish_reason"]
    assert usage == {"prompt_tokens": bound, "completion_tokens": 50, "total_tokens": bound + 50}
    assert finish == "stop"
    [row] = await gw.store.call(gw.store.usage_records)
    assert (row.prompt_tokens, row.completion_tokens) == (bound, 50)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with gateway(tmp_path, backend=Scripted()) as g:
        yield g


async def test_a_client_gone_before_the_first_event_frees_its_call(tmp_path: Path) -> None:
    backend = Scripted()
    async with gateway(tmp_path, backend=backend) as g:
        backend.send.send_nowait(counted("never sent", 1))
        body = json.dumps(chat("scripted", stream=True)).encode()
        token = g.operator_token("alice")["Authorization"].encode()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.1"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"authorization", token), (b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1),
            "server": ("test", 80),
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                await trio.sleep_forever()  # the client is gone before anything reaches it

        await g.app(scope, receive, send)  # type: ignore[arg-type]
        assert backend.done.is_set()  # the node's call was let go
        status = g.limiter.status("alice")
        assert (status["inflight"], status["tokens_held"]) == (0, 0)
        [row] = await g.store.call(g.store.usage_records)
    assert (row.status, row.prompt_tokens, row.completion_tokens) == (499, 0, 0)
