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
and the calls as they are written, in ``CallPart`` s: a call's index, id and name as soon
as its name is read, then the raw text of its arguments object as it grows (the parts of
a call join into exactly its arguments). A call whose name does not come first, or whose
arguments are not an object, is read whole once it is complete. Text that may still
become a call is held back; text that does not parse as a call (a model's garbage, a
hostile prompt's echo) is content in the end, never an error. A call must name one of the
offered tools. A call cut off by ``max_tokens`` keeps the arguments written so far (the
answer's ``finish_reason`` is ``length``), as OpenAI's do.

Under a forced call (``tool_choice`` ``required`` or a named function) the node has
constrained the output to JSON: ``forced_parser`` reads it the same way.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from protocols import CallPart, ToolCall

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


def nine_character_ids(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` (in a template's form) with every call id cut to the 9 letters and digits
    Mistral's templates require: the last 9 of the id's own, zero-padded, so a call and the
    answer quoting it keep the same id."""

    def short(value: str) -> str:
        return "".join(c for c in value if c.isascii() and c.isalnum())[-9:].rjust(9, "0")

    out = []
    for message in messages:
        message = dict(message)
        if "tool_calls" in message:
            message["tool_calls"] = [c | {"id": short(c["id"])} for c in message["tool_calls"]]
        if "tool_call_id" in message:
            message["tool_call_id"] = short(message["tool_call_id"])
        out.append(message)
    return out


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


# The start of a call whose arguments can be streamed: the name first, then the
# arguments object (Hermes, Llama 3, Mistral v3 and forced calls), or Mistral's
# ``name[ARGS]`` before the object.
_OBJECT_HEAD = re.compile(
    r'\s*\{\s*"name"\s*:\s*"([A-Za-z0-9_-]{1,64})"\s*,\s*"(?:arguments|parameters)"\s*:\s*(?=\{)'
)
_NAMED_HEAD = re.compile(r"\s*([A-Za-z0-9_-]{1,64})(?:\[ARGS\])?\s*(?=\{)")
# What may stand between calls where the answer is nothing but calls.
_BETWEEN = "};,] \t\r\n"


@dataclass
class _Value:
    """How far a JSON value being streamed has got: it ends when its brackets close."""

    depth: int = 0
    string: bool = False
    escaped: bool = False

    def end(self, text: str) -> int | None:
        """Where the value ends in ``text`` (just past it), or None if it goes on."""
        for at, char in enumerate(text):
            if self.string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.string = False
            elif char == '"':
                self.string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth <= 0:
                    return at + 1
        return None


@dataclass
class CallParser:
    """Splits one generation's text into content and call parts (see the module
    docstring). ``list`` is the format of forced calls: a JSON list of calls."""

    format: str
    names: set[str]
    parallel: bool = True
    made: int = 0  # calls begun: the next one's index
    _held: str = ""  # text not yet known to be content, or not yet read
    _state: str = "text"  # text, plain, head, arguments, after
    _region: str = ""  # where the answer is all calls: all of it, for a last reading
    _value: _Value = field(default_factory=_Value)
    _dropping: bool = False  # the call being read is not passed on (one at a time)

    def __post_init__(self) -> None:
        if self.format == "list":
            self._state = "head"

    def feed(self, text: str) -> tuple[str, list[CallPart]]:
        """Content that is now certain, and the call parts ``text`` completes."""
        self._held += text
        if self._state != "text" and self.format != "hermes":
            self._region += text
        return self._run(final=False)

    def close(self) -> tuple[str, list[CallPart]]:
        """The rest, at the end of the generation."""
        return self._run(final=True)

    def _run(self, final: bool) -> tuple[str, list[CallPart]]:
        states = {
            "text": self._text,
            "plain": self._plain,
            "head": self._head,
            "arguments": self._arguments,
            "after": self._after,
        }
        content: list[str] = []
        parts: list[CallPart] = []
        while True:
            step = states[self._state](final)
            if step is None:
                return "".join(content), parts
            content.append(step[0])
            parts += step[1]

    # Each state reads what is held: None when it needs more text (or, at the end, when
    # nothing is left), else the content and parts it found, and the state it left for.

    def _text(self, final: bool) -> _Step:
        held = self._held
        if not held:
            return None
        if self.format == "llama3":
            stripped = held.lstrip()
            if not final and (not stripped or _PYTHON_TAG.startswith(stripped)):
                return None  # may yet be a call
            self._state = "head" if stripped.startswith(("{", _PYTHON_TAG)) else "plain"
            self._region = held
            return "", []
        marker = _HERMES_OPEN if self.format == "hermes" else _MISTRAL
        start = held.find(marker)
        if start >= 0:
            self._state = "head"
            # Hermes reads each call on its own and keeps its tag, in case it is not one.
            kept = start if self.format == "hermes" else start + len(marker)
            self._held = self._region = held[kept:]
            return held[:start], []
        keep = 0 if final else _prefix_len(held, marker)
        self._held = held[len(held) - keep :]
        return (held[: len(held) - keep], []) if len(held) > keep else None

    def _plain(self, final: bool) -> _Step:
        held, self._held = self._held, ""
        return (held, []) if held else None

    def _head(self, final: bool) -> _Step:
        if self.format == "hermes":
            body = self._held[len(_HERMES_OPEN) :]
        else:
            stripped = self._between(self._held, final)
            if stripped is None:
                return None
            body = self._held = stripped
        named = self.format == "mistral" and not body.startswith("{")
        found = (_NAMED_HEAD if named else _OBJECT_HEAD).match(body)
        if found is not None and found.group(1) in self.names:
            self._held = body[found.end() :]
            self._state, self._value = "arguments", _Value()
            return "", self._begin(found.group(1))
        if self.format == "hermes":
            return self._hermes_whole(body, final)
        if not final:
            return None
        # Not a call that could be streamed: the whole of what is left is read at once.
        held, self._held = self._held, ""
        self._state = "plain"
        if self.made:
            return (held, []) if held.strip() else None
        return self._all_or_content(self._region, self._whole_calls(self._region))

    def _arguments(self, final: bool) -> _Step:
        end = self._value.end(self._held)
        if end is None:
            if not self._held:
                return None
            end = len(self._held)
        else:
            self._state = "after"
        piece, self._held = self._held[:end], self._held[end:]
        return "", [] if self._dropping else [CallPart(self.made - 1, piece)]

    def _after(self, final: bool) -> _Step:
        if self.format == "hermes":
            end = self._held.find(_HERMES_CLOSE)
            if end < 0:  # what comes before the closing tag is not content
                if final:
                    self._held = ""
                return None
            self._held = self._held[end + len(_HERMES_CLOSE) :]
            self._state = "text"
            return "", []
        self._held = self._held.lstrip(_BETWEEN)
        if not self._held:
            return None
        self._state = "head"
        return "", []

    def _between(self, text: str, final: bool) -> str | None:
        """``text`` without the marks that may come before a call (None: wait for more)."""
        while True:
            text = text.lstrip(_BETWEEN if self.made else " \t\r\n")
            for mark in (_MISTRAL, _PYTHON_TAG, "["):
                if text.startswith(mark) and (mark != "[" or not _MISTRAL.startswith(text)):
                    text = text[len(mark) :]
                    break
                if not final and mark.startswith(text) and text:
                    return None
            else:
                return text

    def _begin(self, name: str) -> list[CallPart]:
        """The first part of a call to ``name``; none if calls are one at a time and one
        was made already."""
        self._dropping = bool(self.made) and not self.parallel
        if self._dropping:
            return []
        self.made += 1
        return [CallPart(self.made - 1, "", call_id(), name)]

    def _whole(self, calls: list[ToolCall]) -> list[CallPart]:
        parts: list[CallPart] = []
        for call in calls:
            parts += self._begin(call.name)
            if not self._dropping:
                parts.append(CallPart(self.made - 1, call.arguments))
        return parts

    def _all_or_content(self, text: str, calls: list[ToolCall | None]) -> _Step:
        if not calls or any(c is None for c in calls):
            return (text, []) if text else None
        return "", self._whole([c for c in calls if c is not None])

    def _hermes_whole(self, body: str, final: bool) -> _Step:
        """A tagged call read whole, once its closing tag (or the end) has come."""
        end = body.find(_HERMES_CLOSE)
        if end < 0 and not final:
            return None
        # A call cut off by the end of the answer is still read, if it parses.
        stop = len(body) if end < 0 else end + len(_HERMES_CLOSE)
        call = _object_call(body[: len(body) if end < 0 else end].strip(), self.names, "arguments")
        whole = self._held[: len(_HERMES_OPEN) + stop]
        self._held = self._held[len(whole) :]
        self._state = "text"
        return ("", self._whole([call])) if call else (whole, [])

    def _whole_calls(self, text: str) -> list[ToolCall | None]:
        """The calls in ``text`` read at once, where the answer is all calls."""
        if self.format == "llama3":
            parts = text.strip().removeprefix(_PYTHON_TAG).split(";")
            return [_object_call(part, self.names, "parameters") for part in parts]
        if self.format == "mistral":
            return _mistral_calls(text, self.names)
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):  # cut off by max_tokens
            return [None]
        items = body if isinstance(body, list) else []
        return [
            as_call(c.get("name"), c.get("arguments"), self.names) if isinstance(c, dict) else None
            for c in items
        ]


_Step = tuple[str, list[CallPart]] | None


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
class NamedParser:
    """A call to the function ``tool_choice`` named: the node forced its arguments, so
    everything the model writes is their text."""

    name: str
    _started: bool = False

    def feed(self, text: str) -> tuple[str, list[CallPart]]:
        parts = [] if self._started else [CallPart(0, "", call_id(), self.name)]
        self._started = True
        return "", parts + ([CallPart(0, text)] if text else [])

    def close(self) -> tuple[str, list[CallPart]]:
        return self.feed("")


def forced_parser(names: set[str], name: str | None) -> CallParser | NamedParser:
    """The parser of calls the node forced: a list of ``{"name", "arguments"}`` objects,
    or (``name`` set, a named function) the arguments alone."""
    return CallParser("list", names) if name is None else NamedParser(name)
