"""The text-to-speech runners on tiny random VITS and SpeechT5 models, and ``speak``.

The runners are loaded through ``load_runner`` and the real ``from_pretrained``; ``speak``
runs over in-memory streams with the real runner and with a torch-free one that lets
cancellation be seen.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import trio

from node.p2p.rpc_client import RemoteError
from node.worker.loading import load_runner, task_of
from node.worker.runners import ModelRunner, no_progress
from node.worker.runners.base import SpeechRunner
from node.worker.runners.speech import SpeechT5Speech, VitsSpeech, pieces
from protocols import AudioChunk, ErrorCode, ModelInfo, SpeechParams
from protocols.operator import ModelSpec
from tests.tiny_models import build_tiny_speecht5, build_tiny_vits
from tests.unit.node.worker.runners.test_image import CancelAfter, node

pytestmark = pytest.mark.slow
SAID = "Hello world. This is the second sentence! And a third one?"


def test_text_is_spoken_a_sentence_at_a_time() -> None:
    assert pieces("  One.  Two!\nThree?four  ") == ["One.", "Two!", "Three?four"]
    ideographic = "\u4e00\u53e5\u3002\u4e8c\u53e5\uff01"  # two sentences, CJK full stops
    assert pieces(ideographic) == [ideographic[:3], ideographic[3:]]
    assert pieces("word " * 5, limit=11) == ["word word", "word word", "word"]
    assert pieces("x" * 25, limit=10) == ["x" * 10, "x" * 10, "x" * 5]
    assert pieces(" \n ") == []


def load(path: Path) -> ModelRunner:
    return load_runner(ModelSpec(str(path)), path.parent, "cpu", no_progress, lambda needs: None)


@pytest.fixture(scope="module")
def vits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VitsSpeech]:
    torch.set_num_threads(1)
    runner = load(build_tiny_vits(tmp_path_factory.mktemp("voices") / "vits"))
    assert isinstance(runner, VitsSpeech)
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def speecht5(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpeechT5Speech]:
    torch.set_num_threads(1)
    runner = load(build_tiny_speecht5(tmp_path_factory.mktemp("voices") / "t5"))
    assert isinstance(runner, SpeechT5Speech)
    yield runner
    runner.close()


def spoken(runner: SpeechRunner, **kw: object) -> list[AudioChunk]:
    params = SpeechParams(**{"model": "m", "input": SAID} | kw)  # type: ignore[arg-type]
    return list(runner.speak(params, threading.Event()))


def test_what_a_node_advertises(vits: VitsSpeech, speecht5: SpeechT5Speech, tmp_path: Path) -> None:
    assert isinstance(vits, SpeechRunner) and isinstance(speecht5, SpeechRunner)
    assert vits.info.task == speecht5.info.task == "text-to-speech"
    assert (speecht5.info.context_length, speecht5.info.max_batch) == (200, 1)
    assert task_of(str(build_tiny_vits(tmp_path / "v"))) == "text-to-speech"


@pytest.mark.parametrize("which", ["vits", "speecht5"])
def test_each_sentence_is_its_own_audio(which: str, request: pytest.FixtureRequest) -> None:
    runner: SpeechRunner = request.getfixturevalue(which)
    chunks = spoken(runner, voice="alice" if which == "speecht5" else "")
    assert len(chunks) == 3  # one per sentence, each small enough for one frame
    assert {c.sample_rate for c in chunks} == {16_000}
    assert all(c.pcm and len(c.pcm) % 2 == 0 for c in chunks)


def test_vits_speed_is_its_speaking_rate(vits: VitsSpeech) -> None:
    torch.manual_seed(0)
    slow = sum(c.seconds for c in spoken(vits, speed=0.5))
    torch.manual_seed(0)
    fast = sum(c.seconds for c in spoken(vits, speed=2.0))
    assert fast < slow


def test_speecht5_voices_are_its_named_embeddings(speecht5: SpeechT5Speech) -> None:
    assert spoken(speecht5, voice="BOB")  # names match whatever their case
    assert spoken(speecht5)  # no voice: the first one
    with pytest.raises(ValueError, match="has the voices alice, bob"):
        spoken(speecht5, voice="carol")


def test_a_vits_with_one_speaker_speaks_any_voice_asked_for(vits: VitsSpeech) -> None:
    assert spoken(vits, voice="alloy")


def test_several_vits_speakers_are_numbered(tmp_path: Path) -> None:
    runner = load(build_tiny_vits(tmp_path / "choir", speakers=3))
    assert isinstance(runner, VitsSpeech)
    try:
        assert spoken(runner, voice="2") and spoken(runner)
        with pytest.raises(ValueError, match="3 voices, named 0 to 2"):
            spoken(runner, voice="alloy")
    finally:
        runner.close()


def test_input_it_cannot_pronounce_is_refused(vits: VitsSpeech) -> None:
    with pytest.raises(ValueError, match="none of the characters"):
        spoken(vits, input="12345 ☃")


def test_cancellation_stops_at_the_next_sentence(vits: VitsSpeech) -> None:
    cancelled = CancelAfter(2)
    chunks = list(vits.speak(SpeechParams("m", SAID), cancelled))
    assert len(chunks) == 1


def test_a_closed_runner_refuses(tmp_path: Path) -> None:
    runner = load(build_tiny_vits(tmp_path / "closing"))
    runner.close()
    runner.close()
    with pytest.raises(RuntimeError, match="closed"):
        spoken(runner)  # type: ignore[arg-type]


# --- speak over RPC --------------------------------------------------------------------------


class SlowVoice:
    """A torch-free voice: one chunk per word, ``delay`` seconds each."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.said = 0
        self.stopped = threading.Event()

    @property
    def info(self) -> ModelInfo:
        return ModelInfo("slow", "text-to-speech", "none", 0, 1, "ready")

    def speak(self, params: SpeechParams, cancelled: threading.Event) -> Iterator[AudioChunk]:
        try:
            for _ in params.input.split():
                if cancelled.is_set():
                    return
                time.sleep(self.delay)
                yield AudioChunk(b"\x01\x00" * 1600, 16_000)
                self.said += 1
        finally:
            self.stopped.set()

    def close(self) -> None:
        pass


async def test_speak_streams_each_chunk_and_ends_with_the_seconds(vits: VitsSpeech) -> None:
    async with (
        node({"vits": vits}) as (client, _),
        client.open_call("speak", SpeechParams("vits", SAID).to_wire()) as call,
    ):
        chunks = [AudioChunk.from_wire(c) async for c in call]
    assert len(chunks) == 3
    assert call.result == {
        "chunks": 3,
        "audio_seconds": round(sum(c.seconds for c in chunks), 3),
    }


async def test_speak_refusals(vits: VitsSpeech) -> None:
    async with node({"vits": vits, "slow": SlowVoice()}) as (client, _):
        with pytest.raises(RemoteError) as info:
            await client.call("speak", SpeechParams("absent", "hi").to_wire())
        assert info.value.code is ErrorCode.MODEL_NOT_FOUND
        with pytest.raises(RemoteError) as info:
            await client.call("speak", SpeechParams("vits", "hi").to_wire() | {"speed": 9.0})
        assert info.value.code is ErrorCode.BAD_REQUEST
        with pytest.raises(RemoteError) as info:
            await client.call("speak", SpeechParams("vits", "123").to_wire())
        assert info.value.code is ErrorCode.BAD_REQUEST
        with pytest.raises(RemoteError) as info:
            await client.call("generate_image", {"model": "slow"})
        assert info.value.code in (ErrorCode.BAD_REQUEST, ErrorCode.MODEL_NOT_FOUND)


async def test_leaving_the_call_stops_the_voice() -> None:
    voice = SlowVoice(delay=0.05)
    async with node({"slow": voice}) as (client, service):
        with trio.move_on_after(0.3):
            await client.call("speak", SpeechParams("slow", "word " * 800).to_wire())
        with trio.fail_after(5):
            await service.roster.wait_idle()
            while not voice.stopped.is_set():
                await trio.sleep(0.01)
        assert voice.said < 100  # of 800
