"""``/v1/audio/speech``, ``/v1/audio/transcriptions`` and ``/v1/audio/translations``,
in-process with a fake swarm that answers like a ``Router`` (tests/integration/
test_media_swarm runs them against real nodes and models)."""

from __future__ import annotations

import io
import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.types import ASGIApp

import keys
from gateway.api.app import create_app
from gateway.api.auth import Authenticator
from gateway.api.inference import NODE_HEADER
from gateway.api.services import Services
from gateway.media import MediaLimits
from gateway.routing.router import Generation, Heard, Speech, UnknownModel
from node.p2p.rpc_client import Call
from protocols import (
    AudioChunk,
    ErrorCode,
    GenerateParams,
    Segment,
    SpeechParams,
    TranscribeParams,
    Transcript,
    VisionParams,
)
from protocols.rpc import Chunk, End, Error, Message
from tests.unit.gateway.api.test_http import http
from tests.unit.gateway.api.test_images import RecordingMeter

KEY = Ed25519PrivateKey.generate()
AUTH = {"Authorization": f"Bearer {keys.issue(KEY, 'alice', 3600)}"}
PEER = "12D3KooWFakeSpeechNode"
RATE = 16_000


def call_of(frames: list[Message]) -> Call:
    send, receive = trio.open_memory_channel[Message](math.inf)
    for frame in frames:
        send.send_nowait(frame)
    send.close()
    return Call(1, receive)


class FakeMedia:
    """``voice`` speaks one tenth of a second per word, a chunk per word, ``droning`` five
    seconds per word; ``croaky`` fails after its first chunk. ``ears`` hears "window N" in
    window N, with one segment, and says the language was French. Anything else is unknown."""

    def __init__(self) -> None:
        self.spoken: list[SpeechParams] = []
        self.heard: list[TranscribeParams] = []

    @asynccontextmanager
    async def speak(self, params: SpeechParams, timeout: float) -> AsyncIterator[Speech]:
        self.spoken.append(params)
        if params.model not in ("voice", "croaky", "droning"):
            raise UnknownModel(params.model, ["voice"])
        words = params.input.split()
        samples = RATE * 5 if params.model == "droning" else RATE // 10
        chunks: list[Message] = [
            Chunk(1, AudioChunk(b"\x10\x00" * samples, RATE).to_wire()) for _ in words
        ]
        end: Message = End(1, {"audio_seconds": len(words) / 10})
        if params.model == "croaky":
            chunks, end = chunks[:1], Error(1, ErrorCode.INTERNAL, "vocoder fell over")
        call = call_of([*chunks, end])
        yield Speech(PEER, call, await anext(call, None))

    async def transcribe(self, params: TranscribeParams, timeout: float) -> Heard:
        self.heard.append(params)
        if params.model != "ears":
            raise UnknownModel(params.model, ["ears"])
        n = len(self.heard)
        segment = Segment(0.5, min(params.seconds, 2.0), f"window {n}")
        text = f"window {n}"
        return Heard(PEER, Transcript(text, "fr", [segment] if params.timestamps else [], 1, 2))

    def describe(
        self, params: VisionParams, timeout: float
    ) -> AbstractAsyncContextManager[Generation]:
        raise UnknownModel(params.model, [])


class NoText:
    def generate(
        self, params: GenerateParams, timeout: float
    ) -> AbstractAsyncContextManager[Generation]:
        raise UnknownModel(params.model, [])

    def serving(self) -> dict[str, list[dict[str, Any]]]:
        return {}


@pytest.fixture
def media() -> FakeMedia:
    return FakeMedia()


@pytest.fixture
def meter() -> RecordingMeter:
    return RecordingMeter()


def make_app(media: FakeMedia | None, meter: RecordingMeter, max_upload: int = 1 << 20) -> ASGIApp:
    services = Services(
        backend=NoText(),
        auth=Authenticator(KEY.public_key()),
        media=media,
        meters=[meter],
        media_limits=MediaLimits(max_audio_seconds=70),
    )
    return create_app(services, max_body_bytes=4096, max_upload_bytes=max_upload)


@pytest.fixture
async def client(media: FakeMedia, meter: RecordingMeter) -> AsyncIterator[httpx.AsyncClient]:
    async with http(make_app(media, meter)) as c:
        yield c


def wav(seconds: float, rate: int = 8_000) -> bytes:
    out = io.BytesIO()
    samples = 0.2 * np.sin(np.arange(int(seconds * rate)) / 5)
    soundfile.write(out, samples.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


# --- speech ----------------------------------------------------------------------------------


async def test_speech_as_a_streamed_wav(
    client: httpx.AsyncClient, media: FakeMedia, meter: RecordingMeter
) -> None:
    body = {"model": "voice", "input": "one two three", "response_format": "wav", "speed": 2}
    response = await client.post("/v1/audio/speech", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers[NODE_HEADER] == PEER
    assert response.content[:4] == b"RIFF" and len(response.content) == 44 + 3 * RATE // 10 * 2
    assert media.spoken == [SpeechParams("voice", "one two three", "", 2.0)]
    [outcome] = meter.outcomes
    # 0.3 s of speech sent: one second charged; 13 characters at speed 2 may take at most 2.
    assert (outcome.kind, outcome.prompt_tokens, outcome.status) == ("speech", 0, 200)
    assert (outcome.audio_seconds, outcome.budget_audio) == (1, 2)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
async def test_speech_is_charged_at_most_what_its_input_can_say(
    client: httpx.AsyncClient, meter: RecordingMeter, fmt: str
) -> None:
    # Ten seconds for seven characters: a node cannot charge more than 4 characters a second.
    body = {"model": "droning", "input": "hum hum", "response_format": fmt}
    response = await client.post("/v1/audio/speech", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    [outcome] = meter.outcomes
    assert outcome.audio_seconds == outcome.budget_audio == 2


@pytest.mark.parametrize(("fmt", "container"), [("mp3", "MP3"), ("flac", "FLAC"), ("opus", "OGG")])
async def test_speech_encoded_whole(client: httpx.AsyncClient, fmt: str, container: str) -> None:
    body = {"model": "voice", "input": "one two", "voice": "alloy", "response_format": fmt}
    response = await client.post("/v1/audio/speech", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    assert soundfile.info(io.BytesIO(response.content)).format == container


async def test_speech_defaults_to_mp3_and_pcm_is_at_24_khz(client: httpx.AsyncClient) -> None:
    plain = await client.post(
        "/v1/audio/speech", json={"model": "voice", "input": "hi"}, headers=AUTH
    )
    assert plain.headers["content-type"] == "audio/mpeg"
    body = {"model": "voice", "input": "one two", "response_format": "pcm"}
    pcm = await client.post("/v1/audio/speech", json=body, headers=AUTH)
    assert len(pcm.content) / 2 == pytest.approx(0.2 * 24_000, abs=4)


@pytest.mark.parametrize(
    ("body", "status", "why"),
    [
        ({"model": "voice", "input": ""}, 400, "input"),
        ({"model": "voice", "input": "hi", "response_format": "aac"}, 400, "response_format"),
        ({"model": "voice", "input": "hi", "speed": 5}, 400, "speed"),
        ({"model": "voice", "input": "hi", "stream_format": "sse"}, 400, "stream_format"),
        ({"model": "nobody", "input": "hi"}, 404, "not served"),
    ],
)
async def test_speech_refusals(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, why: str
) -> None:
    response = await client.post("/v1/audio/speech", json=body, headers=AUTH)
    assert response.status_code == status
    assert why in response.json()["error"]["message"]


async def test_a_voice_failing_half_way_ends_the_stream_and_is_recorded(
    client: httpx.AsyncClient, meter: RecordingMeter
) -> None:
    body = {"model": "croaky", "input": "one two", "response_format": "wav"}
    response = await client.post("/v1/audio/speech", json=body, headers=AUTH)
    assert response.status_code == 200  # sent before the failure
    assert len(response.content) == 44 + RATE // 10 * 2
    assert meter.outcomes[-1].status == 502
    whole = await client.post(
        "/v1/audio/speech", json=body | {"response_format": "flac"}, headers=AUTH
    )
    assert whole.status_code == 502 and "the node failed to run the model" in whole.text


async def test_no_speech_without_a_swarm_side(meter: RecordingMeter) -> None:
    async with http(make_app(None, meter)) as c:
        body = {"model": "voice", "input": "hi"}
        response = await c.post("/v1/audio/speech", json=body, headers=AUTH)
    assert response.status_code == 503


# --- transcriptions --------------------------------------------------------------------------


async def test_long_audio_is_heard_in_windows_each_given_what_came_before(
    client: httpx.AsyncClient, media: FakeMedia, meter: RecordingMeter
) -> None:
    response = await client.post(
        "/v1/audio/transcriptions",
        data={"model": "ears", "response_format": "verbose_json", "prompt": "Names: Ada."},
        files={"file": ("talk.wav", wav(65))},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == "window 1 window 2 window 3"
    assert body["duration"] == pytest.approx(65)
    assert body["language"] == "fr" and body["task"] == "transcribe"
    starts = [s["start"] for s in body["segments"]]
    # Each window's segments are moved to where the window starts in the file.
    assert starts[0] == 0.5 and 25.5 <= starts[1] - 0.5 <= 30 and starts[2] - starts[1] >= 25
    assert [p.prompt for p in media.heard] == [
        "Names: Ada.",
        "Names: Ada. window 1",
        "Names: Ada. window 1 window 2",
    ]
    assert [p.language for p in media.heard] == [None, "fr", "fr"]  # the first one's, kept
    assert all(p.timestamps and p.seconds <= 30 for p in media.heard)
    [outcome] = meter.outcomes
    assert (outcome.kind, outcome.prompt_tokens, outcome.completion_tokens) == (
        "transcription",
        0,
        0,
    )
    assert outcome.audio_seconds == outcome.budget_audio == 65


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("json", None),
        ("text", "window 1"),
        ("srt", "1\n00:00:00,500 --> 00:00:02,000\nwindow 1\n"),
        ("vtt", "WEBVTT\n\n00:00:00.500 --> 00:00:02.000\nwindow 1\n"),
    ],
)
async def test_response_formats(client: httpx.AsyncClient, fmt: str, expected: str | None) -> None:
    response = await client.post(
        "/v1/audio/transcriptions",
        data={"model": "ears", "response_format": fmt},
        files={"file": ("a.wav", wav(3))},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    if expected is None:
        assert response.json() == {"text": "window 1", "usage": {"type": "duration", "seconds": 3}}
    else:
        assert response.text == expected


async def test_translations_are_into_english_whatever_language_is_sent(
    client: httpx.AsyncClient, media: FakeMedia, meter: RecordingMeter
) -> None:
    response = await client.post(
        "/v1/audio/translations",
        data={"model": "ears", "language": "fr"},
        files={"file": ("a.wav", wav(2))},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    assert [(p.task, p.language) for p in media.heard] == [("translate", None)]
    assert meter.outcomes[0].kind == "translation"


@pytest.mark.parametrize(
    ("data", "files", "why"),
    [
        ({"model": "ears"}, None, "upload the audio"),
        ({}, {"file": ("a.wav", b"RIFF")}, "model"),
        ({"model": "ears"}, {"file": ("a.txt", b"hello " * 100)}, "not audio"),
        ({"model": "ears"}, {"file": ("a.wav", b"")}, "not audio"),
        ({"model": "ears", "language": "French"}, {"file": ("a.wav", b"x")}, "language"),
        ({"model": "ears", "response_format": "xml"}, {"file": ("a.wav", b"x")}, "response_format"),
        ({"model": "ears", "temperature": "2"}, {"file": ("a.wav", b"x")}, "temperature"),
        ({"model": "ears", "stream": "true"}, {"file": ("a.wav", b"x")}, "not streamed"),
        (
            {"model": "ears", "timestamp_granularities[]": ["segment", "word"]},
            {"file": ("a.wav", b"x")},
            "only segment timestamps",
        ),
    ],
)
async def test_transcription_refusals_say_why(
    client: httpx.AsyncClient,
    media: FakeMedia,
    data: dict[str, Any],
    files: dict[str, Any] | None,
    why: str,
) -> None:
    response = await client.post("/v1/audio/transcriptions", data=data, files=files, headers=AUTH)
    assert response.status_code == 400, response.text
    assert why in response.json()["error"]["message"]
    assert media.heard == []


async def test_too_long_and_too_large_audio(media: FakeMedia, meter: RecordingMeter) -> None:
    async with http(make_app(media, meter, max_upload=1_200_000)) as c:
        long = await c.post(
            "/v1/audio/transcriptions",
            data={"model": "ears"},
            files={"file": ("a.wav", wav(71, 4_000))},
            headers=AUTH,
        )
        assert long.status_code == 400
        assert "longer than 70 seconds" in long.json()["error"]["message"]
        large = await c.post(
            "/v1/audio/transcriptions",
            data={"model": "ears"},
            files={"file": ("a.wav", b"\0" * 1_300_000)},
            headers=AUTH,
        )
        assert large.status_code == 413
        # Other routes keep the smaller limit.
        body = {"model": "voice", "input": "x" * 4000, "voice": "v" * 200}
        assert (await c.post("/v1/audio/speech", json=body, headers=AUTH)).status_code == 413
    assert media.heard == []


async def test_an_unknown_model_is_a_404_after_decoding(
    client: httpx.AsyncClient, meter: RecordingMeter
) -> None:
    response = await client.post(
        "/v1/audio/transcriptions",
        data={"model": "nobody"},
        files={"file": ("a.wav", wav(1))},
        headers=AUTH,
    )
    assert response.status_code == 404
    assert meter.outcomes[0].status == 404


def test_the_routes_are_documented() -> None:
    from fastapi.testclient import TestClient

    app = make_app(FakeMedia(), RecordingMeter())
    schema = TestClient(app).get("/openapi.json").json()
    form = schema["paths"]["/v1/audio/transcriptions"]["post"]["requestBody"]["content"]
    assert set(form["multipart/form-data"]["schema"]["required"]) == {"file", "model"}
    assert (
        "language"
        not in (
            schema["paths"]["/v1/audio/translations"]["post"]["requestBody"]["content"][
                "multipart/form-data"
            ]["schema"]["properties"]
        )
    )
    assert "SpeechRequest" in str(schema["paths"]["/v1/audio/speech"])
