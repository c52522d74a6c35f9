"""The tool-call parsers: each format split out of streamed text, and garbage left as text."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from node.worker.runners.tool_calls import CallParser, ForcedParser, tool_format
from protocols import ToolCall
from tests.tiny_models import TOOL_TEMPLATE

NAMES = {"get_weather", "add"}


def run(parser: CallParser | ForcedParser, pieces: list[str]) -> tuple[str, list[tuple[str, str]]]:
    content, calls = "", list[ToolCall]()
    for piece in pieces:
        text, made = parser.feed(piece)
        content, calls = content + text, calls + made
    text, made = parser.close()
    return content + text, [(c.name, c.arguments) for c in calls + made]


def chars(text: str) -> list[str]:
    return list(text)  # the worst case: one character a piece


def test_the_format_comes_from_the_template() -> None:
    assert tool_format(TOOL_TEMPLATE) == "hermes"
    assert tool_format("{{ tools }} [TOOL_CALLS] {{ m }}") == "mistral"
    assert tool_format("{{ tools }} parameters <|eot_id|>") == "llama3"
    assert tool_format("{% for m in messages %}{{ m.content }}{% endfor %}") is None
    assert tool_format(None) is None


def test_hermes_calls_between_text_in_any_split() -> None:
    text = (
        'Let me look. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        '</tool_call><tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>'
    )
    for pieces in ([text], chars(text)):
        content, calls = run(CallParser("hermes", NAMES), pieces)
        assert content == "Let me look. "
        assert calls == [("get_weather", '{"city": "Paris"}'), ("add", '{"a": 1}')]


def test_hermes_one_call_at_a_time_keeps_the_first() -> None:
    text = '<tool_call>{"name": "add", "arguments": {}}</tool_call>' * 2
    assert run(CallParser("hermes", NAMES, parallel=False), [text])[1] == [("add", "{}")]


def test_hermes_garbage_and_unknown_tools_stay_text() -> None:
    for text in (
        "<tool_call>{not json</tool_call> after",
        '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',
        '<tool_call>{"name": "add", "arguments": [1]}</tool_call>',
        "<tool_call> unterminated",
        "a < b and <tool_ca",
    ):
        assert run(CallParser("hermes", NAMES), chars(text)) == (text, [])


def test_a_call_cut_off_at_the_end_still_counts_if_it_parses() -> None:
    text = '<tool_call>{"name": "add", "arguments": {"a": 2}}'
    assert run(CallParser("hermes", NAMES), [text])[1] == [("add", '{"a": 2}')]


def test_llama3_json_calls_and_plain_answers() -> None:
    call = (
        '<|python_tag|>{"name": "add", "parameters": {"a": 1}}; {"name": "add", "parameters": {}}'
    )
    assert run(CallParser("llama3", NAMES), chars(call)) == (
        "",
        [("add", '{"a": 1}'), ("add", "{}")],
    )
    assert run(CallParser("llama3", NAMES), chars("  The sky is blue.")) == (
        "  The sky is blue.",
        [],
    )
    # JSON that is not a call (a JSON answer, say) is the answer.
    answer = '{"colour": "blue"}'
    assert run(CallParser("llama3", NAMES), [answer]) == (answer, [])


def test_mistral_both_generations() -> None:
    v3 = 'Sure.[TOOL_CALLS][{"name": "add", "arguments": {"a": 1}}]'
    assert run(CallParser("mistral", NAMES), chars(v3)) == ("Sure.", [("add", '{"a": 1}')])
    v11 = '[TOOL_CALLS]add[ARGS]{"a": 1}[TOOL_CALLS]get_weather[ARGS]{"city": "Rome"}'
    calls = run(CallParser("mistral", NAMES), [v11])[1]
    assert calls == [("add", '{"a": 1}'), ("get_weather", '{"city": "Rome"}')]
    assert run(CallParser("mistral", NAMES), ["[TOOL_CALLS]add[ARGS]{broken"]) == (
        "add[ARGS]{broken",
        [],
    )


def test_forced_calls() -> None:
    listed = json.dumps([{"name": "add", "arguments": {"a": 1}}])
    assert run(ForcedParser(NAMES), [listed]) == ("", [("add", '{"a": 1}')])
    assert run(ForcedParser(NAMES, "get_weather"), ['{"city": "Oslo"}'])[1] == [
        ("get_weather", '{"city": "Oslo"}')
    ]
    cut = '[{"name": "add", "argu'  # max_tokens reached
    assert run(ForcedParser(NAMES), [cut]) == (cut, [])


@given(st.lists(st.text(alphabet=st.sampled_from('<>/{}[]"tool_call:name,arguments TOOL_CALLS'))))
def test_hostile_output_never_crashes(pieces: list[str]) -> None:
    for form in ("hermes", "llama3", "mistral"):
        content, calls = run(CallParser(form, NAMES), pieces)
        assert calls or content == "".join(pieces) or form == "mistral"
