"""Tool calls in parts: their wire form, and calls put back together only in order."""

from __future__ import annotations

from typing import Any

import pytest

from protocols import CallPart, Calls, ToolCall, assembled, merged

PARTS = [
    CallPart(0, "", "call_a", "add"),
    CallPart(0, '{"a": '),
    CallPart(0, "1}"),
    CallPart(1, "{}", "call_b", "sub"),
]


def test_parts_cross_the_wire_unchanged() -> None:
    for part in PARTS:
        assert CallPart.from_wire(part.to_wire()) == part
    assert "id" not in PARTS[1].to_wire()


def test_parts_make_their_calls() -> None:
    assert assembled(PARTS) == [
        ToolCall("call_a", "add", '{"a": 1}'),
        ToolCall("call_b", "sub", "{}"),
    ]
    assert merged(PARTS) == [CallPart(0, '{"a": 1}', "call_a", "add"), PARTS[3]]
    assert assembled(merged(PARTS)) == assembled(PARTS)


@pytest.mark.parametrize(
    "parts",
    [
        [CallPart(0, "{}")],  # arguments before any call began
        [CallPart(-1, "{}")],
        [CallPart(1, "", "call_b", "sub")],  # a call skipping an index
        [*PARTS, CallPart(0, "more")],  # an earlier call growing again
        [PARTS[0], CallPart(0, "", "call_c", "add")],  # an index started twice
    ],
)
def test_parts_out_of_order_are_refused(parts: list[CallPart]) -> None:
    calls = Calls()
    with pytest.raises(ValueError):
        for part in parts:
            calls.add(part)


@pytest.mark.parametrize(
    "body",
    [
        {"index": 0, "arguments": "", "id": "x"},  # an id without a name
        {"index": "0", "arguments": ""},
        {"index": 0, "arguments": 5},
        {"index": 0, "arguments": "", "id": "x", "name": 7},
        [],
    ],
)
def test_bad_parts_are_refused(body: Any) -> None:
    with pytest.raises(ValueError):
        CallPart.from_wire(body)
