"""A streamed chat answer: server-sent events decoded into text pieces and usage."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx

from gateway.client.errors import BadResponse, StreamFailed, Unreachable, error_fields

NODE_HEADER = "x-bitinglip-node"
MAX_EVENT_BYTES = 1 << 20  # one SSE event; a chat chunk is a few hundred bytes


class SSEDecoder:
    """Server-sent events from bytes: ``feed`` returns the data of each event it completes.

    Only ``data:`` fields matter to the API; comments and other fields are skipped.
    """

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = bytearray()
        self._data: list[bytes] = []
        self._size = 0
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        events: list[str] = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data).decode("utf-8", "replace"))
                self._data, self._size = [], 0
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
                self._size += len(value)
        if len(self._buffer) + self._size > self._max:
            raise BadResponse(f"the gateway sent a stream event over {self._max} bytes")
        return events


class ChatStream:
    """A streamed chat answer: iterate for text pieces; ``usage`` is filled at the end."""

    def __init__(self, response: httpx.Response) -> None:
        self.node = response.headers.get(NODE_HEADER, "")
        self.usage: dict[str, int] = {}
        self.finish_reason: str | None = None
        self._response = response

    def __iter__(self) -> Iterator[str]:
        decoder = SSEDecoder()
        try:
            for chunk in self._response.iter_bytes():
                for data in decoder.feed(chunk):
                    if data == "[DONE]":
                        return
                    piece = self._event(data)
                    if piece:
                        yield piece
        except httpx.TransportError as exc:
            raise Unreachable(
                f"the connection to the gateway broke off mid-answer ({exc})"
            ) from None
        raise Unreachable("the gateway ended the stream before the answer was complete")

    def _event(self, data: str) -> str:
        try:
            event = json.loads(data)
        except ValueError:
            raise BadResponse("the gateway sent a stream event that is not JSON") from None
        if not isinstance(event, dict):
            raise BadResponse("the gateway sent a stream event that is not an object")
        if "error" in event:
            message, code = error_fields(event)
            raise StreamFailed(f"the answer broke off: {message}", 502, code, message)
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.usage = {k: v for k, v in usage.items() if isinstance(v, int)}
        choices = event.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ""
        if isinstance(reason := choices[0].get("finish_reason"), str):
            self.finish_reason = reason
        delta = choices[0].get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        return content if isinstance(content, str) else ""
