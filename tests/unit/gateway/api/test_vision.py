"""Chats with pictures in ``/v1/chat/completions``, in-process with a fake swarm: which chats
go to an image-to-text model, and what reaches it."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from PIL import Image

from gateway.api.app import create_app
from gateway.api.auth import Authenticator
from gateway.api.services import Services
from gateway.routing.dispatch import Ticket, Wait
from gateway.routing.router import Generation, Heard, Speech, UnknownModel
from node.p2p.rpc_client import Call
from protocols import GenerateParams, SpeechParams, TranscribeParams, VisionMessage, VisionParams
from protocols.rpc import Chunk, End, Message
from protocols.vision import image_format
from tests.unit.gateway.api.test_audio import AUTH, KEY, PEER
from tests.unit.gateway.api.test_http import http
from tests.unit.gateway.api.test_images import RecordingMeter


def answer(text: str, usage: dict[str, Any]) -> Call:
    send, receive = trio.open_memory_channel[Message](math.inf)
    send.send_nowait(Chunk(1, {"text": text}))
    send.send_nowait(End(1, usage | {"finish_reason": "stop"}))
    send.close()
    return Call(1, receive)


class Swarm:
    """``chatty`` writes text, ``looker`` reads pictures; both answer "seen"."""

    def __init__(self) -> None:
        self.texts: list[GenerateParams] = []
        self.looks: list[VisionParams] = []

    def serving(self) -> dict[str, list[dict[str, Any]]]:
        peer = {"peer_id": PEER, "state": "ready", "healthy": True}
        return {
            "chatty": [peer | {"task": "text-generation"}],
            "looker": [peer | {"task": "image-to-text"}],
        }

    @asynccontextmanager
    async def generate(
        self, params: GenerateParams, timeout: float, ticket: Ticket | None = None
    ) -> AsyncIterator[Generation]:
        self.texts.append(params)
        call = answer("said", {"prompt_tokens": 1, "completion_tokens": 1})
        yield Generation(PEER, call, await anext(call, None))

    @asynccontextmanager
    async def describe(
        self, params: VisionParams, timeout: float, ticket: Ticket | None = None
    ) -> AsyncIterator[Generation]:
        if params.model not in self.serving():
            raise UnknownModel(params.model, ["looker"])
        self.looks.append(params)
        call = answer("seen", {"prompt_tokens": 40, "completion_tokens": 1})
        yield Generation(PEER, call, await anext(call, None))

    def speak(
        self, params: SpeechParams, timeout: float, wait: Wait | None = None
    ) -> AbstractAsyncContextManager[Speech]:
        raise UnknownModel(params.model, [])

    async def transcribe(
        self, params: TranscribeParams, timeout: float, wait: Wait | None = None
    ) -> Heard:
        raise UnknownModel(params.model, [])


@pytest.fixture
def swarm() -> Swarm:
    return Swarm()


@pytest.fixture
def meter() -> RecordingMeter:
    return RecordingMeter()


@pytest.fixture
async def client(swarm: Swarm, meter: RecordingMeter) -> AsyncIterator[httpx.AsyncClient]:
    services = Services(
        backend=swarm, auth=Authenticator(KEY.public_key()), media=swarm, meters=[meter]
    )
    async with http(create_app(services)) as c:
        yield c


def picture(size: tuple[int, int] = (40, 30), fmt: str = "JPEG") -> str:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(out, format=fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(out.getvalue()).decode()}"


def shown(url: str, text: str = "what is this?") -> dict[str, Any]:
    parts = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]
    return {"role": "user", "content": parts}


async def test_a_chat_with_a_picture_reaches_the_model_as_parts_in_order(
    client: httpx.AsyncClient, swarm: Swarm, meter: RecordingMeter
) -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        shown(picture((2000, 1000))),
        {"role": "assistant", "content": "A red square."},
        {"role": "user", "content": [{"type": "image_url", "image_url": picture(fmt="PNG")}]},
    ]
    body = {"model": "looker", "messages": messages, "max_tokens": 9, "temperature": 0}
    response = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "seen"
    assert response.json()["usage"]["prompt_tokens"] == 40
    [sent] = swarm.looks
    assert sent.messages == [
        VisionMessage("system", ["Be brief."]),
        VisionMessage("user", [0, "what is this?"]),
        VisionMessage("assistant", ["A red square."]),
        VisionMessage("user", [1]),
    ]
    assert (sent.max_tokens, sent.temperature, sent.stream) == (9, 0.0, False)
    assert [image_format(i) for i in sent.images] == ["PNG", "PNG"]
    assert Image.open(io.BytesIO(sent.images[0])).size == (1024, 512)  # scaled down
    assert swarm.texts == []
    [outcome] = meter.outcomes
    assert (outcome.kind, outcome.prompt_tokens, outcome.completion_tokens) == ("vision", 40, 1)


async def test_an_image_to_text_model_takes_text_alone_and_streams(
    client: httpx.AsyncClient, swarm: Swarm
) -> None:
    body = {"model": "looker", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200
    assert '"content":"seen"' in response.text and response.text.endswith("data: [DONE]\n\n")
    assert [p.images for p in swarm.looks] == [[]]


async def test_text_chats_stay_text(client: httpx.AsyncClient, swarm: Swarm) -> None:
    body = {
        "model": "chatty",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }
    response = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200
    assert len(swarm.texts) == 1 and swarm.looks == []


@pytest.mark.parametrize(
    ("model", "messages", "status", "why"),
    [
        (
            "chatty",
            [shown(picture())],
            400,
            "chatty does not read pictures (models that do: looker)",
        ),
        ("looker", [shown("data:image/png;base64,aGVsbG8=")], 400, "picture 1: a picture is not"),
        ("looker", [shown("data:image/png;base64,@@")], 400, "picture 1: a data URL's picture"),
        ("looker", [shown("http://example.com/cat.png")], 400, "does not fetch pictures"),
        ("looker", [shown("ftp://example.com/cat.png")], 400, "must be a data URL or http"),
        ("looker", [shown(picture())] * 9, 400, "at most 8 pictures"),
        ("nobody", [shown(picture())], 404, "not served by any node"),
    ],
)
async def test_refusals_say_why(
    client: httpx.AsyncClient,
    swarm: Swarm,
    model: str,
    messages: list[dict[str, Any]],
    status: int,
    why: str,
) -> None:
    body = {"model": model, "messages": messages}
    response = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == status, response.text
    assert why in response.json()["error"]["message"]
    assert swarm.looks == []


async def test_without_a_swarm_side_for_pictures_it_is_a_503(swarm: Swarm) -> None:
    services = Services(backend=swarm, auth=Authenticator(KEY.public_key()))
    async with http(create_app(services)) as c:
        body = {"model": "looker", "messages": [shown(picture())]}
        response = await c.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 503


async def test_a_chat_with_pictures_has_one_choice(client: httpx.AsyncClient, swarm: Swarm) -> None:
    body = {"model": "looker", "messages": [shown(picture())], "n": 2}
    response = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 400 and response.json()["error"]["param"] == "n"
    assert swarm.looks == []
