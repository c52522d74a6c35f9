"""What a node's text answer carries besides its text: token log probabilities and the
tool calls parsed out of the model's output.

Both travel in the ``generate`` stream's chunks (and in the end frame of an answer sent
whole) as compact lists, checked on arrival like any peer input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocols.tools import ToolCall
from protocols.validate import exact, finite

MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token, its log probability, and the ``top`` most likely tokens at its
    position with theirs (most likely first)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()

    def to_wire(self) -> list[Any]:
        return [self.token, self.logprob, [list(pair) for pair in self.top]]

    @classmethod
    def from_wire(cls, body: Any) -> TokenLogprob:
        if len(exact(body, list, "logprob")) != 3:
            raise ValueError("a logprob should be [token, logprob, top]")
        token, logprob, top = body
        pairs = exact(top, list, "top logprobs")
        if len(pairs) > MAX_TOP_LOGPROBS:
            raise ValueError(f"more than {MAX_TOP_LOGPROBS} top logprobs")
        return cls(
            exact(token, str, "token"),
            _logprob(logprob),
            tuple(_pair(pair) for pair in pairs),
        )


def _logprob(value: Any) -> float:
    # A token the model rules out has -inf: msgpack carries it, JSON cannot.
    if isinstance(value, float) and value == float("-inf"):
        return value
    return finite(value, "logprob")


def _pair(body: Any) -> tuple[str, float]:
    pair = exact(body, list, "top logprob")
    if len(pair) != 2:
        raise ValueError("a top logprob should be [token, logprob]")
    return exact(pair[0], str, "token"), _logprob(pair[1])


def answer_to_wire(logprobs: list[TokenLogprob], calls: list[ToolCall]) -> dict[str, Any]:
    """The extra fields of a chunk or end frame (none when there is nothing to carry)."""
    extra: dict[str, Any] = {}
    if logprobs:
        extra["logprobs"] = [lp.to_wire() for lp in logprobs]
    if calls:
        extra["tool_calls"] = [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls
        ]
    return extra


def answer_from_wire(body: dict[str, Any]) -> tuple[list[TokenLogprob], list[ToolCall]]:
    """The logprobs and tool calls in a chunk or end frame from a node."""
    logprobs = exact(body.get("logprobs", []), list, "logprobs")
    calls = exact(body.get("tool_calls", []), list, "tool_calls")
    return [TokenLogprob.from_wire(lp) for lp in logprobs], [ToolCall.from_wire(c) for c in calls]
