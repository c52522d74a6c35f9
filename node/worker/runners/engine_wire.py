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

from protocols import GenerateParams

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
    """One event of a streamed completion: text, a finish reason, or the usage."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def request_body(params: GenerateParams, model: str) -> tuple[str, dict[str, Any]]:
    """The path and JSON body of a streamed completion of ``params`` by ``model``."""
    body: dict[str, Any]
    if params.messages is not None:
        path = "/v1/chat/completions"
        body = {"messages": [{"role": m.role, "content": m.content} for m in params.messages]}
    else:
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
    return Chunk(
        text if isinstance(text, str) else "",
        reason if isinstance(reason, str) else None,
        prompt,
        completion,
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
