"""Tools a chat call offers the model, and the calls the model makes to them.

A ``Tool`` is an OpenAI function definition (a name, a description, its parameters as a
JSON schema); a ``ToolCall`` is one call the model made (an id, the function's name, its
arguments as JSON text). ``call_schema`` is the JSON schema every well-formed call to one
of the offered tools satisfies: a node decoding under ``tool_choice`` ``required`` (or a
named function) constrains the model's output to it, so the call always parses.
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


def call_schema(tools: list[Tool], parallel: bool) -> dict[str, Any]:
    """The JSON schema of the model's calls: a list of ``{"name", "arguments"}`` objects
    (one at most unless ``parallel``), each naming one of ``tools`` with arguments that
    satisfy that tool's parameters."""
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
    return {"type": "array", "items": one, "minItems": 1} | ({} if parallel else {"maxItems": 1})
