"""Tools and tool answers rendered by Qwen-, Llama 3.1- and Mistral-style chat templates on
a tiny random model: the runner renders a whole agent turn through each, reads the family's
call format from it, and a forced call parses whichever template taught the format."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from node.worker.runners.base import no_progress
from node.worker.runners.text import TextRunner
from protocols import ChatMessage, GenerateParams, Tool, ToolCall, assembled
from tests.chat_templates import FAMILIES, chat_template
from tests.tiny_models import build_tiny_bpe_llama

pytestmark = pytest.mark.slow
WEATHER = Tool(
    "get_weather",
    "The weather in a city.",
    {"type": "object", "properties": {"city": {"enum": ["paris", "rome"]}}, "required": ["city"]},
)
CALL = ToolCall("call_0123456789abcdef01234567", "get_weather", '{"city": "paris"}')
TURN = [
    ChatMessage("system", "Be brief."),
    ChatMessage("user", "weather in paris ?"),
    ChatMessage("assistant", "", [CALL]),
    ChatMessage("tool", "sunny, 24 C", tool_call_id=CALL.id),
]


@pytest.fixture(scope="module", params=FAMILIES)
def runner(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TextRunner]:
    torch.set_num_threads(1)
    family = request.param
    path = build_tiny_bpe_llama(tmp_path_factory.mktemp(family), chat_template(family))
    loaded = TextRunner.load(family, path, "cpu", None, 2, no_progress)
    try:
        yield loaded
    finally:
        loaded.close()


def ask(**changes: Any) -> GenerateParams:
    base: dict[str, Any] = {"model": "m", "messages": TURN, "tools": [WEATHER], "max_tokens": 8}
    return GenerateParams(**base | changes)


def rendered(runner: TextRunner, params: GenerateParams) -> str:
    return str(runner._tokenizer.decode(runner._encode(params)))


def test_the_template_teaches_its_format(runner: TextRunner) -> None:
    assert runner.tool_format == runner.info.id


def test_tools_calls_and_answers_are_rendered(runner: TextRunner) -> None:
    prompt = rendered(runner, ask())
    assert "The weather in a city." in prompt and '"rome"' in prompt  # the tool's schema
    assert '"city": "paris"' in prompt  # the earlier call's arguments
    assert "sunny, 24 C" in prompt  # the tool's answer
    if runner.tool_format == "mistral":
        # Mistral's template takes 9-character ids only: the call and its answer keep one.
        assert '"id": "f01234567"' in prompt and '"call_id": "f01234567"' in prompt
    else:
        assert "sunny, 24 C" in prompt.split("get_weather")[-1]
    # tool_choice none: the tools are not offered, the earlier turn stays.
    bare = rendered(runner, ask(tool_choice="none"))
    assert "The weather in a city." not in bare and "sunny, 24 C" in bare


def test_a_turn_generates_through_each_template(runner: TextRunner) -> None:
    deltas = list(runner.generate(ask(), threading.Event()))
    assert deltas[-1].finish_reason in ("stop", "length", "tool_calls")
    assert deltas[-1].prompt_tokens == len(runner._encode(ask()))


def test_a_forced_call_parses_whatever_the_template(runner: TextRunner) -> None:
    deltas = list(
        runner.generate(
            ask(tool_choice="required", parallel_tool_calls=False, max_tokens=100),
            threading.Event(),
        )
    )
    (call,) = assembled([p for d in deltas for p in d.tool_calls])
    assert call.name == "get_weather" and json.loads(call.arguments)["city"] in ("paris", "rome")
    assert deltas[-1].finish_reason == "tool_calls"


# Only Llama 3.1's template takes one call per turn (and refuses two).
@pytest.mark.parametrize("runner", ["llama3"], indirect=True)
def test_a_conversation_the_template_refuses_is_a_clear_error(runner: TextRunner) -> None:
    assert runner.tool_format == "llama3"
    two = [*TURN[:2], ChatMessage("assistant", "", [CALL, CALL])]
    with pytest.raises(ValueError, match=r"^messages: the chat template of llama3 refuses"):
        runner.generate(ask(messages=two), threading.Event())
