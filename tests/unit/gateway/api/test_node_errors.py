"""What users are told when a node fails: a code and a short sentence, never the node's
internals (tracebacks, file paths, exception reprs); the whole text is in the log."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from gateway.api.errors import MAX_NODE_MESSAGE, node_text
from gateway.routing.dispatch import Ticket
from gateway.routing.router import Generation, NoPeerReady, UpstreamError
from node.p2p.rpc_client import Call
from protocols import Chunk, Error, ErrorCode, GenerateParams, Message
from tests.unit.gateway.api.test_http import (
    PEER,
    FakeBackend,
    assert_error,
    auth,
    chat,
    http,
    make_app,
    sse_events,
)

TRACEBACK = (
    "RuntimeError: CUDA error: device-side assert triggered\n"
    "Traceback (most recent call last):\n"
    '  File "/opt/bitinglip/node/worker/runners/text.py", line 212, in step\n'
)
LEAKY = {
    "internal": (ErrorCode.INTERNAL, f"RuntimeError: <Tensor at 0x7f3a9c0d1e80> {TRACEBACK}"),
    "too-long": (
        ErrorCode.BAD_REQUEST,
        "prompt has 5000 tokens, the context 2048 (/home/op/.cache/hub/models--x/config.json)\n"
        + TRACEBACK,
    ),
    "chatty": (ErrorCode.MODEL_NOT_FOUND, "no such model " + "x" * 500),
}


class FailingNode(FakeBackend):
    """Each model in ``LEAKY`` fails with its node error; ``midway`` after one chunk."""

    @asynccontextmanager
    async def generate(
        self, params: GenerateParams, timeout: float, ticket: Ticket | None = None
    ) -> AsyncIterator[Generation]:
        if params.model == "midway":
            send, receive = trio.open_memory_channel[Message](math.inf)
            send.send_nowait(Chunk(1, {"text": "Hel"}))
            send.send_nowait(Error(1, *LEAKY["internal"]))
            call = Call(1, receive)
            yield Generation(PEER, call, await anext(call, None))
            return
        if params.model == "nobody":
            raise NoPeerReady(
                "no node can take 'nobody' now (a1b2c3d4: ready); last error: "
                "UNAVAILABLE: engine died, see /var/log/engine/stderr.log\nTraceback ..."
            )
        code, message = LEAKY[params.model]
        raise UpstreamError(code, message)
        yield  # an async generator, for the context manager


@pytest.mark.parametrize("stream", [False, True])
async def test_an_internal_node_error_is_a_sentence_and_its_detail_is_logged(
    stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async with http(make_app(FailingNode())) as client:
        with caplog.at_level(logging.WARNING, logger="gateway.api.errors"):
            response = await client.post(
                "/v1/chat/completions", json=chat("internal", stream=stream), headers=auth()
            )
    message = assert_error(response, 502, "server_error", "internal")
    assert message == "the node failed to run the model"
    assert "text.py" in caplog.text and "0x7f3a9c0d1e80" in caplog.text


async def test_an_internal_error_mid_stream_is_the_same_sentence() -> None:
    async with http(make_app(FailingNode())) as client:
        response = await client.post(
            "/v1/chat/completions", json=chat("midway", stream=True), headers=auth()
        )
    error = sse_events(response.text)[-2]["error"]
    assert (error["code"], error["message"]) == ("internal", "the node failed to run the model")


async def test_a_node_that_explains_a_refusal_is_cut_to_one_line_without_paths() -> None:
    async with http(make_app(FailingNode())) as client:
        too_long = await client.post("/v1/chat/completions", json=chat("too-long"), headers=auth())
        chatty = await client.post("/v1/chat/completions", json=chat("chatty"), headers=auth())
        nobody = await client.post("/v1/chat/completions", json=chat("nobody"), headers=auth())
    message = assert_error(too_long, 400, "invalid_request_error", "bad_request")
    assert message == "prompt has 5000 tokens, the context 2048 (…)"
    message = assert_error(chatty, 502, "server_error", "model_not_found")
    assert message.startswith("no such model xxx") and len(message) == MAX_NODE_MESSAGE
    message = assert_error(nobody, 503, "server_error", "no_peer_ready")
    assert message == (
        "no node can take 'nobody' now (a1b2c3d4: ready); last error: "
        "UNAVAILABLE: engine died, see …"
    )


@pytest.mark.parametrize(
    ("said", "shown"),
    [
        (
            "model 'HuggingFaceTB/SmolLM2-135M' is loading",
            "model 'HuggingFaceTB/SmolLM2-135M' is loading",
        ),
        ("1/0/8 slots busy", "1/0/8 slots busy"),
        (r"cannot open C:\Users\op\model.bin", "cannot open …"),
        ("\n\n", "the node failed"),
        ("bell\x07 and \x1b[31mred\x9b", "bell and [31mred"),
    ],
)
def test_node_text(said: str, shown: str) -> None:
    assert node_text(said) == shown
