"""Speech and pictures across the swarm: the router over in-memory node connections, with
torch-free models (real processes: tests/integration/test_media_swarm.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from gateway.routing.router import UnknownModel, UpstreamError
from node.worker.runners import Delta, EchoRunner, ModelRunner
from protocols import (
    AudioChunk,
    ErrorCode,
    ModelInfo,
    Segment,
    SpeechParams,
    TranscribeParams,
    Transcript,
    VisionMessage,
    VisionParams,
)
from tests.unit.gateway.routing.test_router import node, swarm_of

SECOND = b"\x00\x00" * 16_000


class Voice:
    def __init__(self, model_id: str = "voice") -> None:
        self.model_id = model_id

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self.model_id, "text-to-speech", "none", 0, 1, "ready")

    def speak(self, params: SpeechParams, cancelled: threading.Event) -> Iterator[AudioChunk]:
        if params.input == "unsayable":
            raise ValueError("this voice cannot say that")
        for _ in params.input.split():
            yield AudioChunk(b"\x01\x00" * 800, 16_000)

    def close(self) -> None:
        pass


class Ears:
    """Hears "heard"; ``liar`` claims segments far outside the window."""

    def __init__(self, liar: bool = False) -> None:
        self.liar = liar

    @property
    def info(self) -> ModelInfo:
        return ModelInfo("ears", "speech-to-text", "none", 448, 1, "ready")

    def transcribe(self, params: TranscribeParams, cancelled: threading.Event) -> Transcript:
        end = 500.0 if self.liar else params.seconds
        return Transcript("heard", "en", [Segment(0.0, end, "heard")], 0, 1)

    def close(self) -> None:
        pass


class Eyes:
    @property
    def info(self) -> ModelInfo:
        return ModelInfo("eyes", "image-to-text", "none", 512, 1, "ready")

    def describe(self, params: VisionParams, cancelled: threading.Event) -> Iterator[Delta]:
        yield Delta("a red ", 20, 1)
        yield Delta("square", 20, 2, "stop")

    def close(self) -> None:
        pass


async def test_speech_streams_from_the_node() -> None:
    async with (
        swarm_of({"peer-a": node({"voice": Voice()})}) as router,
        router.speak(SpeechParams("voice", "one two three"), 10) as speech,
    ):
        chunks = [c async for c in speech.chunks()]
    assert speech.peer_id == "peer-a"
    assert [c.seconds for c in chunks] == [0.05, 0.05, 0.05]


async def test_a_window_is_heard_and_its_times_kept_inside_it() -> None:
    async with swarm_of({"peer-a": node({"ears": Ears(liar=True)})}) as router:
        heard = await router.transcribe(TranscribeParams("ears", SECOND * 2), 10)
    assert heard.transcript.text == "heard"
    assert heard.transcript.segments == [Segment(0.0, 2.0, "heard")]


async def test_pictures_are_described_as_text_streams() -> None:
    ask = VisionParams("eyes", [VisionMessage("user", ["hi"])])
    async with (
        swarm_of({"peer-a": node({"eyes": Eyes()})}) as router,
        router.describe(ask, 10) as generation,
    ):
        text = await generation.text()
    assert text == "a red square"
    assert generation.usage["completion_tokens"] == 2


async def test_each_call_reaches_only_a_model_of_its_task() -> None:
    runners: dict[str, ModelRunner] = {
        "voice": Voice(),
        "ears": Ears(),
        "eyes": Eyes(),
        "echo": EchoRunner(),
    }
    async with swarm_of({"peer-a": node(runners)}) as router:
        with pytest.raises(UnknownModel) as info:
            async with router.speak(SpeechParams("echo", "hi"), 10):
                pass
        assert info.value.available == ["voice"]
        with pytest.raises(UnknownModel) as info:
            await router.transcribe(TranscribeParams("voice", SECOND), 10)
        assert info.value.available == ["ears"]
        with pytest.raises(UnknownModel) as info:
            async with router.describe(VisionParams("ears", [VisionMessage("user", ["x"])]), 10):
                pass
        assert info.value.available == ["eyes"]


async def test_a_refusal_of_the_node_is_passed_on() -> None:
    async with swarm_of({"peer-a": node({"voice": Voice()})}) as router:
        with pytest.raises(UpstreamError) as info:
            async with router.speak(SpeechParams("voice", "unsayable"), 10):
                pass
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert "cannot say" in str(info.value)
