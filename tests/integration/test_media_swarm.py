"""Speech out, speech in and pictures understood, through a real gateway and node process
serving tiny random models of each family to the ``openai`` client.

One swarm serves the module: a gateway whose audio limits are small enough to test, and one
node holding a VITS and a SpeechT5 voice, a Whisper and two picture readers (LLaVA chats,
BLIP captions), each loaded from its directory through ``from_pretrained``.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import httpx
import numpy as np
import openai
import pytest
import soundfile
from PIL import Image

from gateway.accounts.database import Store
from tests.integration.conftest import LocalSwarmFixture
from tests.tiny_models import (
    build_tiny_blip,
    build_tiny_llava,
    build_tiny_speecht5,
    build_tiny_vits,
    build_tiny_whisper,
)

MAX_SECONDS = 45
CONFIG = f"""\
[gateway]
max_audio_seconds = {MAX_SECONDS}
max_upload_bytes = 3000000
"""


@dataclass(frozen=True)
class Models:
    vits: str
    speecht5: str
    whisper: str
    llava: str
    blip: str


@dataclass(frozen=True)
class Media:
    swarm: LocalSwarmFixture
    models: Models

    def client(self, user: str = "tester") -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.swarm.url()}/v1",
            api_key=self.swarm.token(user),
            max_retries=0,
            timeout=60,
        )


def wait_tasks(url: str, token: str, wanted: dict[str, str], timeout: float = 120) -> None:
    """Until the gateway lists every model in ``wanted`` ready, with its task."""
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        listed = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"})
        seen = {
            m["id"]: m["task"]
            for m in listed.json()["data"]
            if any(p["state"] == "ready" for p in m["peers"])
        }
        if all(seen.get(m) == task for m, task in wanted.items()):
            return
        time.sleep(0.2)
    raise AssertionError(f"the gateway lists {seen}, not {wanted}")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Media]:
    base = tmp_path_factory.mktemp("media")
    models = Models(
        vits=str(build_tiny_vits(base / "tiny-vits")),
        speecht5=str(build_tiny_speecht5(base / "tiny-speecht5")),
        whisper=str(build_tiny_whisper(base / "tiny-whisper")),
        llava=str(build_tiny_llava(base / "tiny-llava")),
        blip=str(build_tiny_blip(base / "tiny-blip")),
    )
    swarm = LocalSwarmFixture(base / "swarm")
    try:
        config = swarm.data_dir / "gateway.toml"
        config.write_text(CONFIG)
        swarm.local.spawn("gateway", "gateway", ["--port", "0", "--config", str(config)])
        swarm.local.wait(["gateway"], "ready", 60)
        every = [models.vits, models.speecht5, models.whisper, models.llava, models.blip]
        swarm.start_node("node-0", [swarm.addr("gateway")], every)
        swarm.wait_ready(["node-0"])
        tasks = {models.vits: "text-to-speech", models.speecht5: "text-to-speech"}
        tasks |= {models.whisper: "speech-to-text"}
        tasks |= {models.llava: "image-to-text", models.blip: "image-to-text"}
        wait_tasks(swarm.url(), swarm.token(), tasks)
        yield Media(swarm, models)
    finally:
        swarm.local.stop()


def wav(seconds: float, rate: int = 22_050) -> bytes:
    """A tone with a pause every ten seconds, as a WAV file."""
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (t % 10 < 9.5)
    out = io.BytesIO()
    soundfile.write(out, tone.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def data_url(image: Image.Image, fmt: str = "PNG") -> str:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(out.getvalue()).decode()}"


def look(url: str, text: str = "what is in this image ?") -> list[dict[str, Any]]:
    parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]
    return [{"role": "user", "content": parts}]


# --- text to speech --------------------------------------------------------------------------


def test_speech_in_every_format(media: Media) -> None:
    client = media.client()
    said = "Hello world. This is the second sentence! And a third?"
    raw = client.audio.speech.with_raw_response.create(
        model=media.models.vits, voice="alloy", input=said, response_format="wav"
    )
    assert raw.headers["x-bitinglip-node"] == media.swarm.peer_id("node-0")
    assert raw.headers["content-type"] == "audio/wav"
    samples, rate = soundfile.read(io.BytesIO(raw.content))
    assert rate == 16_000 and len(samples) > 0

    for fmt, container in (("mp3", "MP3"), ("flac", "FLAC"), ("opus", "OGG")):
        encoded = client.audio.speech.create(
            model=media.models.vits, voice="alloy", input=said, response_format=cast(Any, fmt)
        ).content
        assert soundfile.info(io.BytesIO(encoded)).format == container

    pcm = client.audio.speech.create(
        model=media.models.vits, voice="alloy", input=said, response_format="pcm", speed=2.0
    ).content
    assert len(pcm) % 2 == 0 and pcm  # 24 kHz 16-bit, as OpenAI's pcm is


def test_speech_streams_as_it_is_made(media: Media) -> None:
    client = media.client()
    with client.audio.speech.with_streaming_response.create(
        model=media.models.speecht5, voice="bob", input="One. Two. Three.", response_format="wav"
    ) as response:
        pieces = list(response.iter_bytes())
    whole = b"".join(pieces)
    assert whole[:4] == b"RIFF" and whole[8:12] == b"WAVE"
    assert whole[40:44] == b"\xff\xff\xff\xff"  # a streamed WAV: its length unknown up front


def test_speech_refusals_say_why(media: Media) -> None:
    client = media.client()
    with pytest.raises(openai.BadRequestError, match="alice, bob"):
        client.audio.speech.create(model=media.models.speecht5, voice="carol", input="hi")
    with pytest.raises(openai.BadRequestError, match="input"):
        client.audio.speech.create(model=media.models.vits, voice="alloy", input="x" * 5000)
    with pytest.raises(openai.NotFoundError):  # a chat model is not a voice
        client.audio.speech.create(model=media.models.llava, voice="alloy", input="hi")


# --- speech to text --------------------------------------------------------------------------


def test_transcription_of_long_audio_in_windows(media: Media) -> None:
    client = media.client()
    audio = wav(40)
    verbose = client.audio.transcriptions.create(
        model=media.models.whisper,
        file=("tone.wav", audio, "audio/wav"),
        response_format="verbose_json",
        timestamp_granularities=["segment"],
    )
    assert isinstance(verbose.text, str)
    assert verbose.duration == pytest.approx(40, abs=0.1)
    assert verbose.language in {"en", "fr", "de", "es"}
    for segment in verbose.segments or []:
        assert 0 <= segment.start <= segment.end <= 40

    plain = client.audio.transcriptions.create(
        model=media.models.whisper, file=("tone.wav", audio), response_format="text", language="en"
    )
    assert isinstance(plain, str)
    subtitles = client.audio.transcriptions.create(
        model=media.models.whisper, file=("tone.wav", audio), response_format="vtt"
    )
    assert str(subtitles).startswith("WEBVTT")
    english = client.audio.translations.create(
        model=media.models.whisper, file=("tone.wav", wav(3))
    )
    assert isinstance(english.text, str)


def test_transcription_refusals_say_why(media: Media) -> None:
    client = media.client()
    model = media.models.whisper
    with pytest.raises(openai.BadRequestError, match="not audio"):
        client.audio.transcriptions.create(model=model, file=("notes.wav", b"plain text " * 50))
    with pytest.raises(openai.BadRequestError, match=f"longer than {MAX_SECONDS} seconds"):
        client.audio.transcriptions.create(model=model, file=("long.wav", wav(50, 8_000)))
    with pytest.raises(openai.APIStatusError, match="request body over 3000000 bytes") as large:
        client.audio.transcriptions.create(model=model, file=("big.wav", b"\0" * 3_100_000))
    assert large.value.status_code == 413
    with pytest.raises(openai.BadRequestError, match="segment"):
        client.audio.transcriptions.create(
            model=model, file=("a.wav", wav(1)), timestamp_granularities=["word"]
        )
    with pytest.raises(openai.NotFoundError):  # a voice does not listen
        client.audio.transcriptions.create(model=media.models.vits, file=("a.wav", wav(1)))


# --- image to text ---------------------------------------------------------------------------


def test_vision_chat_whole_and_streamed(media: Media) -> None:
    client = media.client()
    picture = data_url(Image.new("RGB", (300, 200), (200, 30, 30)))
    answer = client.chat.completions.create(
        model=media.models.llava, messages=cast(Any, look(picture)), max_tokens=6
    )
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens == 6
    assert answer.usage.prompt_tokens > 16  # the picture's tokens count as prompt

    stream = client.chat.completions.create(
        model=media.models.llava, messages=cast(Any, look(picture)), max_tokens=6, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces)

    caption = client.chat.completions.create(
        model=media.models.blip,
        messages=cast(Any, look(data_url(Image.new("L", (64, 64)), "JPEG"))),
    )
    assert isinstance(caption.choices[0].message.content, str)


def test_vision_refusals_say_why(media: Media) -> None:
    client = media.client()
    model = media.models.llava
    not_png = "data:image/png;base64," + base64.b64encode(b"not a picture at all").decode()
    with pytest.raises(openai.BadRequestError, match=r"picture 1: .*not one that can be read"):
        client.chat.completions.create(model=model, messages=cast(Any, look(not_png)))
    with pytest.raises(openai.BadRequestError, match="does not fetch pictures"):
        client.chat.completions.create(
            model=model, messages=cast(Any, look("http://169.254.169.254/latest/x.png"))
        )
    huge = data_url(Image.new("1", (9000, 6000)))  # 54 megapixels in a few kilobytes
    with pytest.raises(openai.BadRequestError, match="over the limit"):
        client.chat.completions.create(model=model, messages=cast(Any, look(huge)))
    with pytest.raises(openai.BadRequestError, match="describes pictures"):
        client.chat.completions.create(
            model=media.models.blip, messages=[{"role": "user", "content": "hello"}]
        )


# --- seen and counted ------------------------------------------------------------------------


def test_calls_are_counted_and_listed(media: Media) -> None:
    client = media.client("counted")
    client.audio.speech.create(model=media.models.vits, voice="alloy", input="Count me.")
    client.audio.transcriptions.create(model=media.models.whisper, file=("a.wav", wav(2)))
    client.chat.completions.create(
        model=media.models.llava,
        messages=cast(Any, look(data_url(Image.new("RGB", (8, 8))))),
        max_tokens=3,
    )
    url = media.swarm.url()
    metrics = httpx.get(f"{url}/metrics").text
    for kind in ("speech", "transcription", "vision"):
        assert f'kind="{kind}"' in metrics
    assert "bitinglip_gateway_audio_seconds_total" in metrics

    headers = {"Authorization": f"Bearer {media.swarm.token()}"}
    peers = httpx.get(f"{url}/v1/peers", headers=headers).json()["data"]
    tasks = {m["task"] for p in peers for m in p.get("models") or []}
    assert {"text-to-speech", "speech-to-text", "image-to-text"} <= tasks

    with Store.open(media.swarm.data_dir / "peers" / "gateway") as store:
        rows = {r.kind: r for r in store.usage_records("counted")}
    # Audio is charged in seconds: speech by what was sent (at most 4 characters a second),
    # a transcription by what was heard; not in tokens.
    speech, heard = rows["speech"], rows["transcription"]
    assert 1 <= speech.audio_seconds <= 3 and speech.prompt_tokens == 0
    assert heard.audio_seconds == 2 and heard.prompt_tokens == heard.completion_tokens == 0
    usage = httpx.get(
        f"{url}/v1/usage", headers={"Authorization": f"Bearer {media.swarm.token('counted')}"}
    ).json()
    assert usage["totals"]["audio_seconds"] == speech.audio_seconds + 2
    assert usage["limits"]["audio_seconds_today"] == speech.audio_seconds + 2
    assert rows["vision"].prompt_tokens > 0 and rows["vision"].completion_tokens == 3
