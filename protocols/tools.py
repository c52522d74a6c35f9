"""Tools a chat call offers the model, and the calls the model makes to them.

A ``Tool`` is an OpenAI function definition (a name, a description, its parameters as a
JSON schema); a ``ToolCall`` is one call the model made (an id, the function's name, its
arguments as JSON text). ``call_schema`` is the JSON schema every well-formed call to one
of the offered tools satisfies: a node decoding under ``tool_choice`` ``required`` (or a
named function) constrains the model's output to it, so the call always parses.

A node streams a call as the model writes it, in ``CallPart`` s: the first part of a call
carries its index, id and name, each later one the next stretch of its arguments text.
``Calls`` puts them back together, refusing parts out of order (a peer's mistake).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from protocols.validate import exact, required

MAX_TOOLS = 128
MAX_TOOL_NAME = 64
# OpenAI's rule for function names; it keeps them safe to splice into a template.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
TOOL_CHOICES = ("auto", "none", "required", "function")
# Calls one forced answer may hold: two per tool (the weather in two cities), so a weak
# model cannot keep adding calls until max_tokens; past the last, the list must end.
CALLS_PER_TOOL = 2
MAX_FORCED_CALLS = 8


@dataclass(frozen=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)  # a JSON schema

    def _problem(self) -> str | None:
        if not _NAME.fullmatch(self.name):
            return f"tool name {self.name[:80]!r} must be 1 to 64 letters, digits, _ or -"
        return None

    def template_form(self) -> dict[str, Any]:
        """The tool as chat templates take it (transformers' ``tools=``): OpenAI's shape."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}

    @classmethod
    def from_wire(cls, body: Any) -> Tool:
        body = exact(body, dict, "tool")
        return cls(
            required(body, "name", str),
            exact(body.get("description", ""), str, "tool description"),
            exact(body.get("parameters", {}), dict, "tool parameters"),
        )


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON object, as text

    @classmethod
    def from_wire(cls, body: Any) -> ToolCall:
        body = exact(body, dict, "tool call")
        return cls(
            required(body, "id", str), required(body, "name", str), required(body, "arguments", str)
        )


@dataclass(frozen=True)
class CallPart:
    """A piece of the ``index``-th call: its start (``id`` and ``name`` set) or more of its
    ``arguments`` text (a whole call is one part with all three)."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None

    def to_wire(self) -> dict[str, Any]:
        head = {} if self.id is None else {"id": self.id, "name": self.name}
        return {"index": self.index, "arguments": self.arguments} | head

    @classmethod
    def from_wire(cls, body: Any) -> CallPart:
        body = exact(body, dict, "tool call part")
        call_id, name = body.get("id"), body.get("name")
        if (call_id is None) != (name is None):
            raise ValueError("a tool call starts with both its id and its name")
        return cls(
            required(body, "index", int),
            required(body, "arguments", str),
            None if call_id is None else exact(call_id, str, "tool call id"),
            None if name is None else exact(name, str, "tool call name"),
        )


class Calls:
    """Whole calls from their parts, in order: a call starts at the next index, and only
    the last call started grows."""

    def __init__(self) -> None:
        self._heads: list[tuple[str, str]] = []
        self._arguments: list[list[str]] = []

    def add(self, part: CallPart) -> None:
        """Take one more part; ``ValueError`` if it does not follow the ones before."""
        if part.id is not None and part.name is not None:
            if part.index != len(self._heads):
                raise ValueError(f"tool call {part.index} starts out of order")
            self._heads.append((part.id, part.name))
            self._arguments.append([])
        elif not self._heads or part.index != len(self._heads) - 1:
            raise ValueError(f"arguments for tool call {part.index}, which is not the last")
        self._arguments[part.index].append(part.arguments)

    @property
    def calls(self) -> list[ToolCall]:
        return [
            ToolCall(call_id, name, "".join(arguments))
            for (call_id, name), arguments in zip(self._heads, self._arguments, strict=True)
        ]


def assembled(parts: list[CallPart]) -> list[ToolCall]:
    """The calls ``parts`` make (``ValueError`` if they are out of order)."""
    calls = Calls()
    for part in parts:
        calls.add(part)
    return calls.calls


def merged(parts: list[CallPart]) -> list[CallPart]:
    """``parts`` with each call's run of parts made one: fewer to send in one frame."""
    out: list[CallPart] = []
    for part in parts:
        if out and out[-1].index == part.index and part.id is None:
            last = out[-1]
            out[-1] = CallPart(last.index, last.arguments + part.arguments, last.id, last.name)
        else:
            out.append(part)
    return out


def tools_problem(tools: list[Tool], choice: str, name: str | None) -> str | None:
    """Why these tools and this ``tool_choice`` cannot go together, or ``None``."""
    if len(tools) > MAX_TOOLS:
        return f"tools: at most {MAX_TOOLS} tools"
    for tool in tools:
        if (why := tool._problem()) is not None:
            return f"tools: {why}"
    if len({t.name for t in tools}) < len(tools):
        return "tools: two tools have the same name"
    if choice not in TOOL_CHOICES:
        return f"tool_choice must be one of {', '.join(TOOL_CHOICES)}"
    if choice in ("required", "function") and not tools:
        return f"tool_choice: {choice} needs tools"
    if (choice == "function") != (name is not None):
        return "tool_choice: a named function goes with tool_choice function, and only there"
    if name is not None and name not in {t.name for t in tools}:
        return f"tool_choice: no tool is named {name[:MAX_TOOL_NAME]!r}"
    return None


def max_calls(tools: list[Tool], parallel: bool) -> int:
    """The most calls a forced answer may make."""
    return min(CALLS_PER_TOOL * len(tools), MAX_FORCED_CALLS) if parallel else 1


def call_schema(tools: list[Tool], parallel: bool) -> dict[str, Any]:
    """The JSON schema of the model's calls: a list of ``{"name", "arguments"}`` objects
    (``max_calls`` at most), each naming one of ``tools`` with arguments that satisfy that
    tool's parameters."""
    one = {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "name": {"const": tool.name},
                    "arguments": tool.parameters or {"type": "object"},
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for tool in tools
        ]
    }
    return {"type": "array", "items": one, "minItems": 1, "maxItems": max_calls(tools, parallel)}
