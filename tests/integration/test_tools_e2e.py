"""Tool calling, structured outputs and logprobs end to end: the ``openai`` client, a real
gateway and a node process serving a scripted model (its weights make it call a tool, then
answer) and a tiny random one (whose JSON must parse whatever its weights), plus echo.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_openai_e2e import wait_models
from tests.tiny_models import build_scripted_llama, build_tiny_bpe_llama

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"enum": ["paris", "rome"]}},
            "required": ["city"],
        },
    },
}
# Every value bounded: a random model's answer ends within a few dozen tokens.
TRIP: Any = {
    "type": "object",
    "properties": {
        "city": {"enum": ["paris", "rome"]},
        "days": {"enum": [1, 2, 3]},
        "sunny": {"type": "boolean"},
    },
    "required": ["city", "days", "sunny"],
}
ASK: list[Any] = [{"role": "user", "content": "weather in paris ?"}]


@dataclass(frozen=True)
class Swarm:
    swarm: LocalSwarmFixture
    scripted: str
    random: str

    def client(self) -> Any:  # the client's overloads take typed dicts, not these tests' own
        url = f"{self.swarm.url()}/v1"
        return openai.OpenAI(base_url=url, api_key=self.swarm.token(), max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def tools_swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    base = tmp_path_factory.mktemp("tools")
    scripted = str(build_scripted_llama(base / "scripted"))
    random = str(build_tiny_bpe_llama(base / "random"))
    s = LocalSwarmFixture(base / "swarm")
    try:
        gateway = s.start_gateway()
        s.start_node("node", [str(gateway["addrs"][0])], [scripted, random, "echo"])  # type: ignore[index]
        s.wait_ready(["node"])
        wait_models(s.url(), s.token(), {scripted, random, "echo"}, timeout=120)
        yield Swarm(s, scripted, random)
    finally:
        s.local.stop()


def test_a_tool_call_then_the_answer(tools_swarm: Swarm) -> None:
    api = tools_swarm.client()
    first = api.chat.completions.create(model=tools_swarm.scripted, messages=ASK, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "paris"}
    # The agent runs the tool and hands back its answer; the model answers in words.
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"},
    ]
    final = api.chat.completions.create(
        model=tools_swarm.scripted, messages=history, tools=[WEATHER]
    )
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == "the weather is sunny ."
    assert not final.choices[0].message.tool_calls


def test_a_streamed_tool_call_comes_in_openai_chunks(tools_swarm: Swarm) -> None:
    stream = tools_swarm.client().chat.completions.create(
        model=tools_swarm.scripted, messages=ASK, tools=[WEATHER], stream=True
    )
    parts = [c.choices[0] for c in stream if c.choices]
    deltas = [d for p in parts for d in p.delta.tool_calls or []]
    assert deltas[0].index == 0 and deltas[0].id and deltas[0].function
    assert deltas[0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert json.loads(arguments) == {"city": "paris"}
    assert parts[-1].finish_reason == "tool_calls"
    assert not "".join(p.delta.content or "" for p in parts)


def test_tool_choice_none_answers_without_calling(tools_swarm: Swarm) -> None:
    answer = tools_swarm.client().chat.completions.create(
        model=tools_swarm.scripted, messages=ASK, tools=[WEATHER], tool_choice="none"
    )
    assert not answer.choices[0].message.tool_calls
    assert answer.choices[0].finish_reason == "stop"


def test_forced_calls_parse_whatever_the_weights(tools_swarm: Swarm) -> None:
    api = tools_swarm.client()
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in ("required", named):
        answer = api.chat.completions.create(
            model=tools_swarm.random,
            messages=ASK,
            tools=[WEATHER],
            tool_choice=choice,
            parallel_tool_calls=False,
            max_tokens=60,
        )
        (call,) = answer.choices[0].message.tool_calls or []
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments)["city"] in ("paris", "rome")
        assert answer.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_answers_parse(tools_swarm: Swarm, stream: bool) -> None:
    api = tools_swarm.client()
    answer = api.chat.completions.create(
        model=tools_swarm.random,
        messages=ASK,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "trip", "schema": TRIP, "strict": True},
        },
        max_tokens=60,
        temperature=1.0,
        stream=stream,
    )
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
    else:
        text = answer.choices[0].message.content or ""
    trip = json.loads(text)
    assert set(trip) == {"city", "days", "sunny"}
    assert trip["city"] in ("paris", "rome") and trip["days"] in (1, 2, 3)
    assert isinstance(trip["sunny"], bool)


def test_chat_logprobs_plain_and_streamed(tools_swarm: Swarm) -> None:
    api = tools_swarm.client()
    asked: dict[str, Any] = {"model": tools_swarm.random, "messages": ASK, "max_tokens": 8}
    answer = api.chat.completions.create(**asked, logprobs=True, top_logprobs=3)
    content = answer.choices[0].logprobs.content or []
    assert "".join(t.token for t in content) == answer.choices[0].message.content
    assert answer.usage and len(content) == answer.usage.completion_tokens
    for token in content:
        assert token.logprob <= 0 and bytes(token.bytes or []) == token.token.encode()
        assert len(token.top_logprobs) == 3
        assert token.top_logprobs[0].logprob >= token.logprob  # greedy: the likeliest
    streamed = api.chat.completions.create(**asked, logprobs=True, stream=True)
    tokens = [
        t
        for c in streamed
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content or []
    ]
    assert [t.token for t in tokens] == [t.token for t in content]


def test_completion_logprobs(tools_swarm: Swarm) -> None:
    answer = tools_swarm.client().completions.create(
        model=tools_swarm.random, prompt="the cat", max_tokens=5, logprobs=2
    )
    logprobs = answer.choices[0].logprobs
    assert logprobs and logprobs.tokens and logprobs.top_logprobs and logprobs.text_offset
    assert "".join(logprobs.tokens) == answer.choices[0].text
    assert all(len(top) <= 2 for top in logprobs.top_logprobs)
    assert logprobs.text_offset[0] == 0


def test_fields_a_model_cannot_honour_are_refused_by_name(tools_swarm: Swarm) -> None:
    api = tools_swarm.client()
    trials: list[tuple[str, dict[str, Any]]] = [
        ("echo", {"tools": [WEATHER]}),
        ("echo", {"logprobs": True}),
        ("echo", {"response_format": {"type": "json_object"}}),
        (tools_swarm.random, {"functions": [WEATHER["function"]]}),
        (
            tools_swarm.random,
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        ),
    ]
    for model, extra in trials:
        with pytest.raises(openai.BadRequestError) as caught:
            api.chat.completions.create(model=model, messages=ASK, **extra)
        field = next(iter(extra)) if model == "echo" or "functions" in extra else "tool_choice"
        assert caught.value.body["param"] == field or field in caught.value.message  # type: ignore[index]
