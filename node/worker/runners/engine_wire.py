"""What an OpenAI-compatible engine says, without I/O: request bodies in; server-sent
events, stream chunks and Prometheus text out.

Errors of the engine runner (``node.runners.engine``)::

    EngineError                  the engine could not serve a call
    ├── EngineStartError         it exited, or was not ready in time, while starting
    ├── EngineUnavailable        it died and is being restarted, or the runner is closed
    ├── EngineProtocolError      it answered something that is not the OpenAI API
    └── EngineRejected           it refused the request (HTTP 4xx); also a ValueError,
                                 so the node reports it as the caller's mistake
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocols import CallPart, ChatMessage, GenerateParams, TokenLogprob
from protocols.validate import exact

# An SSE event longer than this is not something an engine sends.
MAX_EVENT_BYTES = 1 << 20


class EngineError(Exception):
    """The engine could not serve a call."""


class EngineStartError(EngineError):
    """The engine exited, or was not ready in time, while being started."""


class EngineUnavailable(EngineError):
    """The engine died and is being restarted, or the runner is closed."""


class EngineProtocolError(EngineError):
    """The engine answered something that is not the OpenAI streaming API."""


class EngineRejected(EngineError, ValueError):
    """The engine refused the request as malformed or too long (HTTP 4xx)."""


@dataclass(frozen=True)
class Chunk:
    """One event of a streamed completion: text, a finish reason, or the usage; in a chat,
    parts of tool calls and the log probabilities of its tokens too."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    calls: tuple[CallPart, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()


def request_body(params: GenerateParams, model: str) -> tuple[str, dict[str, Any]]:
    """The path and JSON body of a streamed completion of ``params`` by ``model``.

    A chat's tools, tool choice, JSON answer and logprobs are passed on as OpenAI's API
    spells them (an engine that cannot honour one refuses the call, and the caller hears
    why); logprobs of a raw prompt are refused here (``ValueError`` naming the field): the
    legacy endpoint gives them in another shape.
    """
    body: dict[str, Any]
    if params.messages is not None:
        path = "/v1/chat/completions"
        body = {"messages": [_message(m) for m in params.messages]} | _chat_fields(params)
    else:
        if params.logprobs:
            raise ValueError(f"logprobs: {model} gives them in chats only")
        path = "/v1/completions"
        body = {"prompt": params.prompt or ""}
    body |= {
        "model": model,
        "max_tokens": params.max_tokens,
        "stream": True,
        # The last event then carries the token counts of the whole call.
        "stream_options": {"include_usage": True},
    }
    # Unset, the engine applies the model's own defaults, as the node does.
    body |= {
        name: value
        for name, value in (("temperature", params.temperature), ("top_p", params.top_p))
        if value is not None
    }
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    return path, body


def _message(message: ChatMessage) -> dict[str, Any]:
    body: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        body["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        body["tool_call_id"] = message.tool_call_id
    return body


def _chat_fields(params: GenerateParams) -> dict[str, Any]:
    """The tools, response format and logprobs fields of a chat, those it sets only."""
    fields: dict[str, Any] = {}
    if params.tools:
        named = {"type": "function", "function": {"name": params.tool_name}}
        fields["tools"] = [t.template_form() for t in params.tools]
        fields["tool_choice"] = named if params.tool_choice == "function" else params.tool_choice
        fields["parallel_tool_calls"] = params.parallel_tool_calls
    if params.response_format == "json_object":
        fields["response_format"] = {"type": "json_object"}
    elif params.json_schema is not None:
        schema = {"name": "answer", "schema": params.json_schema}
        fields["response_format"] = {"type": "json_schema", "json_schema": schema}
    if params.logprobs:
        fields |= {"logprobs": True, "top_logprobs": params.top_logprobs}
    return fields


class SseDecoder:
    """Server-sent events, one line at a time: ``feed`` returns an event's data once the
    blank line that ends it arrives."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._size = 0

    def feed(self, line: str) -> str | None:
        line = line.rstrip("\r\n")
        if not line:
            data, self._data, self._size = self._data, [], 0
            return "\n".join(data) if data else None
        if line.startswith(":"):
            return None  # a comment: servers send them to keep a connection open
        field, _, value = line.partition(":")
        if field == "data":
            self._size += len(value)
            if self._size > MAX_EVENT_BYTES:
                raise EngineProtocolError(f"an event is longer than {MAX_EVENT_BYTES} bytes")
            self._data.append(value.removeprefix(" "))
        return None


def read_chunk(data: str) -> Chunk:
    """The meaning of one event's data from either completions endpoint."""
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise EngineProtocolError(
            f"the engine sent an event that is not JSON: {data[:200]!r}"
        ) from exc
    if not isinstance(event, dict):
        raise EngineProtocolError(f"the engine sent an event that is not an object: {data[:200]!r}")
    if "error" in event:  # a failure after the stream began
        raise EngineUnavailable(f"the engine failed the generation: {error_message(event)}")
    usage = event.get("usage")
    prompt = _count(usage, "prompt_tokens")
    completion = _count(usage, "completion_tokens")
    choices = event.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return Chunk("", None, prompt, completion)  # the usage event has no choices
    choice = choices[0]
    delta = choice.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    reason = choice.get("finish_reason")
    try:
        calls = _call_parts(delta.get("tool_calls") if isinstance(delta, dict) else None)
        logprobs = _logprobs(choice.get("logprobs") if isinstance(delta, dict) else None)
    except ValueError as exc:
        raise EngineProtocolError(f"the engine sent a malformed chunk: {exc}") from exc
    return Chunk(
        text if isinstance(text, str) else "",
        reason if isinstance(reason, str) else None,
        prompt,
        completion,
        calls,
        logprobs,
    )


def _call_parts(calls: Any) -> tuple[CallPart, ...]:
    """A chat delta's ``tool_calls``: a part with an id starts a call (with its name)."""
    parts = []
    for call in exact(calls or [], list, "tool_calls"):
        call = exact(call, dict, "tool call")
        function = exact(call.get("function") or {}, dict, "function")
        start = call.get("id") is not None
        body = {"index": call.get("index", 0), "arguments": function.get("arguments") or ""}
        parts.append(
            CallPart.from_wire(
                body | ({"id": call["id"], "name": function.get("name")} if start else {})
            )
        )
    return tuple(parts)


def _logprobs(logprobs: Any) -> tuple[TokenLogprob, ...]:
    """A chat choice's ``logprobs.content``, as the node's own engine reports them."""
    if logprobs is None:
        return ()
    content = exact(exact(logprobs, dict, "logprobs").get("content") or [], list, "content")
    return tuple(
        TokenLogprob.from_wire(
            [
                exact(t, dict, "logprob").get("token"),
                t.get("logprob"),
                [
                    [exact(top, dict, "top logprob").get("token"), top.get("logprob")]
                    for top in exact(t.get("top_logprobs") or [], list, "top_logprobs")
                ],
            ]
        )
        for t in content
    )


def error_message(body: Any) -> str:
    """The message of an OpenAI-style error body, or the body itself."""
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        error = error.get("message", error)
    return str(error)


def parse_metrics(text: str, names: Sequence[str]) -> dict[str, float]:
    """The named samples in Prometheus text format, each summed over its label sets."""
    wanted = set(names)
    found: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace >= 0 and (space < 0 or brace < space):
            name, rest = line[:brace], line[line.rfind("}") + 1 :]
        else:
            name, _, rest = line.partition(" ")
        if name not in wanted:
            continue
        try:
            value = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        found[name] = found.get(name, 0.0) + value
    return found


def _count(usage: Any, name: str) -> int | None:
    value = usage.get(name) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
