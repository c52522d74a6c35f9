"""Tool calls parsed out of a model's streamed text.

Each family of models writes its calls its own way, as its chat template teaches it;
``tool_format`` tells which from the template:

- ``hermes`` (Qwen 2.5 and 3, Hermes, many fine-tunes): ``<tool_call>{"name": ...,
  "arguments": {...}}</tool_call>``, once per call, text around them allowed;
- ``llama3`` (Llama 3.1 to 3.3 JSON tool calling): the whole answer is ``{"name": ...,
  "parameters": {...}}`` (several joined by ``;``), perhaps after ``<|python_tag|>``;
- ``mistral``: ``[TOOL_CALLS]`` then a JSON list of ``{"name", "arguments"}`` (v3
  templates) or ``name[ARGS]{...}`` per call (v11 and later).

A ``CallParser`` takes text as it comes and hands back the text that is plain content
and the calls completed so far. Text that may still become a call is held back; text
that does not parse as a call (a model's garbage, a hostile prompt's echo) is content in
the end, never an error. A call must name one of the offered tools.

Under a forced call (``tool_choice`` ``required`` or a named function) the node has
constrained the output to JSON, and ``ForcedParser`` reads that whole.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from protocols import ToolCall

FORMATS = ("hermes", "llama3", "mistral")
_HERMES_OPEN, _HERMES_CLOSE = "<tool_call>", "</tool_call>"
_MISTRAL = "[TOOL_CALLS]"
_PYTHON_TAG = "<|python_tag|>"
_MISTRAL_CALL = re.compile(r"\s*([A-Za-z0-9_-]{1,64})(?:\[ARGS\])?\s*")


def tool_format(template: str | None) -> str | None:
    """The call format a chat template teaches, or ``None`` for a template that does not
    render tools at all."""
    if not template or "tools" not in template:
        return None
    if _HERMES_OPEN in template:
        return "hermes"
    if _MISTRAL in template:
        return "mistral"
    if "parameters" in template and ("<|eot_id|>" in template or _PYTHON_TAG in template):
        return "llama3"
    return None


def call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def as_call(name: Any, arguments: Any, names: set[str]) -> ToolCall | None:
    """A call to one of ``names`` with object arguments (or their JSON text), else None."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(name, str) or name not in names or not isinstance(arguments, dict):
        return None
    return ToolCall(call_id(), name, json.dumps(arguments, ensure_ascii=False))


def _object_call(text: str, names: set[str], arguments_key: str) -> ToolCall | None:
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    return as_call(body.get("name"), body.get(arguments_key, body.get("arguments")), names)


@dataclass
class CallParser:
    """Splits one generation's text into content and calls (see the module docstring)."""

    format: str
    names: set[str]
    parallel: bool = True
    calls: list[ToolCall] = field(default_factory=list)
    _held: str = ""  # text not yet known to be content
    _whole: bool = False  # the rest of the answer is read at the end

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        """Content that is now certain, and calls completed by ``text``."""
        self._held += text
        if self._whole:
            return "", []
        if self.format == "hermes":
            return self._hermes(final=False)
        if self.format == "llama3":
            stripped = self._held.lstrip()
            if not stripped or _PYTHON_TAG.startswith(stripped):  # may yet be a call
                return "", []
            if stripped.startswith(("{", _PYTHON_TAG)):
                self._whole = True
                return "", []
            self.format = "plain"
        if self.format == "mistral":
            return self._mistral_feed()
        content, self._held = self._held, ""
        return content, []

    def close(self) -> tuple[str, list[ToolCall]]:
        """The rest, at the end of the generation."""
        if self.format == "hermes":
            return self._hermes(final=True)
        held, self._held = self._held, ""
        if self.format == "llama3":
            parts = held.strip().removeprefix(_PYTHON_TAG).split(";")
            calls = [_object_call(part, self.names, "parameters") for part in parts]
            return self._all_or_content(held, calls)
        if self.format == "mistral" and self._whole:
            return self._all_or_content(held, _mistral_calls(held, self.names))
        return held, []

    def _keep(self, call: ToolCall) -> list[ToolCall]:
        """``call``, unless calls are one at a time and one was made already."""
        if self.calls and not self.parallel:
            return []
        self.calls.append(call)
        return [call]

    def _all_or_content(
        self, text: str, calls: list[ToolCall | None]
    ) -> tuple[str, list[ToolCall]]:
        if not calls or any(c is None for c in calls):
            return text, []
        return "", [kept for call in calls if call is not None for kept in self._keep(call)]

    def _hermes(self, final: bool) -> tuple[str, list[ToolCall]]:
        content: list[str] = []
        made: list[ToolCall] = []
        while True:
            start = self._held.find(_HERMES_OPEN)
            if start < 0:
                keep = 0 if final else _prefix_len(self._held, _HERMES_OPEN)
                content.append(self._held[: len(self._held) - keep])
                self._held = self._held[len(self._held) - keep :]
                break
            end = self._held.find(_HERMES_CLOSE, start)
            if end < 0 and not final:
                content.append(self._held[:start])
                self._held = self._held[start:]
                break
            # A call cut off by the end of the answer is still read, if it parses.
            stop = len(self._held) if end < 0 else end + len(_HERMES_CLOSE)
            inner = self._held[start + len(_HERMES_OPEN) : end if end >= 0 else None]
            call = _object_call(inner.strip(), self.names, "arguments")
            content.append(self._held[:start] if call else self._held[:stop])
            made += self._keep(call) if call else []
            self._held = self._held[stop:]
        return "".join(content), made

    def _mistral_feed(self) -> tuple[str, list[ToolCall]]:
        start = self._held.find(_MISTRAL)
        if start >= 0:
            content, self._held = self._held[:start], self._held[start + len(_MISTRAL) :]
            self._whole = True
            return content, []
        keep = _prefix_len(self._held, _MISTRAL)
        content, self._held = (
            self._held[: len(self._held) - keep],
            self._held[-keep:] if keep else "",
        )
        return content, []


def _mistral_calls(text: str, names: set[str]) -> list[ToolCall | None]:
    """The calls after ``[TOOL_CALLS]``: a JSON list, or ``name[ARGS]{...}`` runs."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            body = json.loads(stripped)
        except (ValueError, RecursionError):
            return [None]
        if not isinstance(body, list):
            return [None]
        return [
            as_call(c.get("name"), c.get("arguments"), names) if isinstance(c, dict) else None
            for c in body
        ]
    calls: list[ToolCall | None] = []
    decoder = json.JSONDecoder()
    rest = text
    while rest.strip():
        named = _MISTRAL_CALL.match(rest)
        if named is None:
            return [None]
        try:
            arguments, end = decoder.raw_decode(rest, named.end())
        except (ValueError, RecursionError):
            return [None]
        calls.append(as_call(named.group(1), arguments, names))
        rest = rest[end:].lstrip().removeprefix(_MISTRAL)
    return calls


def _prefix_len(text: str, marker: str) -> int:
    """Length of the longest tail of ``text`` that is a proper start of ``marker``."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


@dataclass
class ForcedParser:
    """The calls in JSON the node forced: a list of ``{"name", "arguments"}`` objects, or
    (``name`` set, a named function) the arguments alone."""

    names: set[str]
    name: str | None = None
    _text: list[str] = field(default_factory=list)

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        self._text.append(text)
        return "", []

    def close(self) -> tuple[str, list[ToolCall]]:
        text = "".join(self._text)
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):  # cut off by max_tokens
            return text, []
        if self.name is not None:
            call = as_call(self.name, body, self.names)
            return (text, []) if call is None else ("", [call])
        items = body if isinstance(body, list) else []
        calls = [
            as_call(c.get("name"), c.get("arguments"), self.names) if isinstance(c, dict) else None
            for c in items
        ]
        if not calls or any(c is None for c in calls):
            return text, []
        return "", [c for c in calls if c is not None]
