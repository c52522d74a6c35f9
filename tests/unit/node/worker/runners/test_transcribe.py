"""The Whisper runner on a tiny random Whisper, and the node's ``transcribe``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from node.p2p.rpc_client import RemoteError
from node.worker.loading import load_runner, task_of
from node.worker.runners import GenerationCancelled, no_progress
from node.worker.runners.base import TranscriptionRunner
from node.worker.runners.transcribe import WhisperRunner
from protocols import ErrorCode, TranscribeParams, Transcript
from protocols.operator import ModelSpec
from tests.tiny_models import WHISPER_LANGUAGES, build_tiny_whisper
from tests.unit.node.worker.runners.test_image import CancelAfter, node

pytestmark = pytest.mark.slow
NOISE = (np.random.default_rng(0).standard_normal(16_000 * 4) * 3000).astype("<i2").tobytes()


@pytest.fixture(scope="module")
def whisper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WhisperRunner]:
    torch.set_num_threads(1)
    path = build_tiny_whisper(tmp_path_factory.mktemp("ears") / "whisper")
    runner = load_runner(ModelSpec(str(path)), path.parent, "cpu", no_progress, lambda _: None)
    assert isinstance(runner, WhisperRunner)
    assert task_of(str(path)) == "speech-to-text"
    yield runner
    runner.close()


def heard(runner: WhisperRunner, **kw: object) -> Transcript:
    params = TranscribeParams(**{"model": "w", "audio": NOISE} | kw)  # type: ignore[arg-type]
    return runner.transcribe(params, threading.Event())


def test_what_a_node_advertises(whisper: WhisperRunner) -> None:
    assert isinstance(whisper, TranscriptionRunner)
    assert (whisper.info.task, whisper.info.context_length, whisper.info.max_batch) == (
        "speech-to-text",
        64,
        1,
    )


def test_the_language_is_detected_when_not_given(whisper: WhisperRunner) -> None:
    found = heard(whisper)
    assert found.language in WHISPER_LANGUAGES
    assert heard(whisper, language="es").language == "es"
    assert 0 < found.completion_tokens <= 32  # half its decoder's positions
    assert found.segments == []


def test_segments_when_timestamps_are_asked_for(whisper: WhisperRunner) -> None:
    found = heard(whisper, timestamps=True, language="en")
    for segment in found.segments:
        assert segment.start >= 0 and isinstance(segment.text, str)


def test_a_prompt_is_cut_to_what_the_model_reads(whisper: WhisperRunner) -> None:
    assert heard(whisper, prompt="hello there").prompt_tokens == len(" hello there") + 1
    assert heard(whisper, prompt="word " * 200).prompt_tokens == 64 // 2 - 1


def test_other_rates_are_resampled_and_translation_is_a_task(whisper: WhisperRunner) -> None:
    at_8k = (np.random.default_rng(1).standard_normal(8_000 * 2) * 3000).astype("<i2").tobytes()
    assert heard(whisper, audio=at_8k, sample_rate=8_000, task="translate").completion_tokens
    with pytest.raises(ValueError, match=r"tlh"):
        heard(whisper, language="tlh")


def test_cancellation_ends_decoding(whisper: WhisperRunner) -> None:
    with pytest.raises(GenerationCancelled):
        whisper.transcribe(TranscribeParams("w", NOISE, language="en"), CancelAfter(3))


async def test_transcribe_over_rpc(whisper: WhisperRunner, tmp_path: Path) -> None:
    async with node({"w": whisper}) as (client, _):
        window = TranscribeParams("w", NOISE, language="en", timestamps=True)
        answer = await client.call("transcribe", window.to_wire())
        transcript = Transcript.from_wire(answer, window.seconds)
        assert transcript.language == "en" and answer["audio_seconds"] == 4.0
        with pytest.raises(RemoteError) as info:
            await client.call("transcribe", window.to_wire() | {"audio": NOISE * 8})
        assert info.value.code is ErrorCode.BAD_REQUEST
        with pytest.raises(RemoteError) as info:
            await client.call("transcribe", window.to_wire() | {"model": "absent"})
        assert info.value.code is ErrorCode.MODEL_NOT_FOUND
