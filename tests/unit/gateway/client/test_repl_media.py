"""The REPL's /say, /listen and /look against a scripted gateway."""

from __future__ import annotations

import base64
import io
import json
import struct
from pathlib import Path

import httpx
import pytest
import soundfile
from rich.console import Console

from gateway.client.api_client import GatewayClient
from gateway.client.repl_commands import Commands, Session, unchattable
from gateway.client.repl_media import sized_wav
from gateway.client.repl_render import Screen

MODELS = {
    "chat": "text-generation",
    "voice": "text-to-speech",
    "ears": "speech-to-text",
    "eyes": "image-to-text",
}
STREAMED_WAV = (
    b"RIFF\xff\xff\xff\xffWAVEfmt "
    + struct.pack("<IHHIIHH", 16, 1, 1, 16_000, 32_000, 2, 16)
    + b"data\xff\xff\xff\xff"
    + b"\x01\x00" * 100
)


def gateway(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/v1/models":
        data = [{"id": m, "task": t, "peers": []} for m, t in MODELS.items()]
        return httpx.Response(200, json={"data": data})
    if request.url.path == "/v1/audio/speech":
        body = json.loads(request.content)
        assert (body["model"], body["response_format"], body["voice"]) == ("voice", "wav", "")
        return httpx.Response(200, content=STREAMED_WAV)
    if request.url.path == "/v1/audio/transcriptions":
        assert b'name="model"\r\n\r\nears' in request.content and b"tone.flac" in request.content
        return httpx.Response(200, json={"text": "hello there"})
    if request.url.path == "/v1/chat/completions":
        [message] = json.loads(request.content)["messages"]
        prompt, picture = message["content"]
        url = picture["image_url"]["url"]
        assert url.startswith("data:image/jpeg;base64,")
        assert base64.b64decode(url.split(",", 1)[1]) == b"jpeg bytes"
        content = f"a red square, as asked: {prompt['text']}"
        return httpx.Response(200, json={"choices": [{"message": {"content": content}}]})
    return httpx.Response(404, json={"error": {"message": "no route", "code": None}})


@pytest.fixture
def repl(tmp_path: Path) -> tuple[Commands, io.StringIO]:
    client = GatewayClient("http://gateway.test")
    client._http = httpx.Client(  # a scripted gateway instead of the network
        base_url="http://gateway.test", transport=httpx.MockTransport(gateway)
    )
    out = io.StringIO()
    screen = Screen(Console(file=out, width=200, no_color=True))
    return Commands(client, Session("chat", image_dir=tmp_path / "out"), screen), out


def test_say_saves_a_wav_whose_lengths_are_filled_in(
    repl: tuple[Commands, io.StringIO], tmp_path: Path
) -> None:
    commands, out = repl
    commands.run("/say hello there")
    [saved] = (tmp_path / "out").iterdir()
    assert saved.suffix == ".wav" and f"saved {saved}" in out.getvalue()
    samples, rate = soundfile.read(saved)
    assert (len(samples), rate) == (100, 16_000)
    assert struct.unpack("<I", saved.read_bytes()[4:8])[0] == saved.stat().st_size - 8


def test_listen_shows_what_was_heard(repl: tuple[Commands, io.StringIO], tmp_path: Path) -> None:
    commands, out = repl
    audio = tmp_path / "tone.flac"
    audio.write_bytes(b"fLaC....")
    commands.run(f"/listen {audio}")
    assert "hello there" in out.getvalue()
    commands.run(f"/listen {tmp_path / 'missing.wav'}")
    assert "cannot read" in out.getvalue()


def test_look_asks_about_a_picture(repl: tuple[Commands, io.StringIO], tmp_path: Path) -> None:
    commands, out = repl
    picture = tmp_path / "red.jpg"
    picture.write_bytes(b"jpeg bytes")
    commands.run(f"/look {picture} what colour?")
    assert "a red square, as asked: what colour?" in out.getvalue()
    commands.run(f"/look {picture}")
    assert "as asked: Describe this picture." in out.getvalue()
    commands.run("/look")
    assert "use /look IMAGE [PROMPT]" in out.getvalue()


def test_media_models_are_not_chatted_with() -> None:
    assert unchattable(MODELS, "eyes") == (
        "'eyes' reads pictures (/look), it does not chat (chat models: chat)"
    )
    assert unchattable(MODELS | {"vectors": "embedding"}, "vectors") == (
        "'vectors' makes embeddings (POST /v1/embeddings), it does not chat (chat models: chat)"
    )


def test_sized_wav_leaves_anything_else_alone() -> None:
    assert sized_wav(b"ID3 an mp3") == b"ID3 an mp3"
    sized = sized_wav(STREAMED_WAV)
    assert struct.unpack("<I", sized[40:44])[0] == 200
    assert sized_wav(sized) == sized
