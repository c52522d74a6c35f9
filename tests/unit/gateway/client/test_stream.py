"""The client's server-sent event decoder and streamed answers, with no server."""

from __future__ import annotations

import json

import httpx
import pytest

from gateway.client import api_client as c

PEER = "12D3KooWScriptedNodeForClientTests"


def test_sse_events_across_chunks_and_the_size_cap() -> None:
    decoder = c.SSEDecoder(max_event_bytes=64)
    assert decoder.feed(b'data: {"a"') == []
    assert decoder.feed(b": 1}\r\n\r\n: a comment\n\ndata: [DONE]\n") == ['{"a": 1}']
    assert decoder.feed(b"\n") == ["[DONE]"]
    with pytest.raises(c.BadResponse, match="over 64 bytes"):
        decoder.feed(b"data: " + b"x" * 100)


def sse(*events: object) -> bytes:
    return b"".join(
        f"data: {json.dumps(e) if not isinstance(e, str) else e}\n\n".encode() for e in events
    )


def test_stream_pieces_usage_and_a_cut_off_stream() -> None:
    piece = {"choices": [{"delta": {"content": "hi"}, "finish_reason": None}]}
    end = {"choices": [{"delta": {}, "finish_reason": "length"}]}
    usage = {"choices": [], "usage": {"completion_tokens": 2}}
    body = sse(piece, piece, end, usage, "[DONE]")
    stream = c.ChatStream(httpx.Response(200, headers={c.NODE_HEADER: PEER}, content=body))
    assert list(stream) == ["hi", "hi"]
    assert (stream.node, stream.finish_reason, stream.usage) == (
        PEER,
        "length",
        {"completion_tokens": 2},
    )

    cut = c.ChatStream(httpx.Response(200, content=sse(piece)))
    with pytest.raises(c.Unreachable, match="before the answer was complete"):
        list(cut)
    with pytest.raises(c.BadResponse, match="not an object"):
        list(c.ChatStream(httpx.Response(200, content=sse("[1, 2]"))))
