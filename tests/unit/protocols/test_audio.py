"""The parameters and answers of speech calls: checked when made, checked off the wire."""

from __future__ import annotations

from typing import Any

import pytest

from protocols import AudioChunk, RemoteProtocolError, SpeechParams, TranscribeParams, Transcript
from protocols.audio import MAX_CHUNK_BYTES, WINDOW_SECONDS, pcm_seconds

SECOND = b"\x01\x00" * 16_000  # one second at the transcription rate


def test_speech_params_round_trip() -> None:
    params = SpeechParams("tts", "Hello there.", "alloy", 1.5)
    assert SpeechParams.from_wire(params.to_wire()) == params


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"input": "   "}, "input must not be empty"),
        ({"input": "x" * 4097}, "longer than 4096"),
        ({"voice": "v" * 65}, "voice is longer"),
        ({"speed": 0.2}, "speed must be between 0.25 and 4"),
        ({"speed": 4.5}, "speed must be between 0.25 and 4"),
    ],
)
def test_speech_params_refuse_what_no_model_can_do(changes: dict[str, Any], why: str) -> None:
    wire = SpeechParams("tts", "hi").to_wire() | changes
    with pytest.raises(RemoteProtocolError, match=why):
        SpeechParams.from_wire(wire)


@pytest.mark.parametrize(
    "changes",
    [{"speed": "fast"}, {"speed": float("nan")}, {"voice": None}, {"input": b"hi"}, {"model": 1}],
)
def test_speech_params_from_a_peer_are_typed_exactly(changes: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError, match="bad speech params"):
        SpeechParams.from_wire(SpeechParams("tts", "hi").to_wire() | changes)


def test_an_audio_chunk_is_whole_samples_within_a_frame() -> None:
    chunk = AudioChunk(SECOND, 16_000)
    assert AudioChunk.from_wire(chunk.to_wire()) == chunk
    assert chunk.seconds == 1.0
    for body in (
        {"audio": b"\x00" * 3, "rate": 16_000},
        {"audio": b"\x00" * (MAX_CHUNK_BYTES + 2), "rate": 16_000},
        {"audio": b"", "rate": 4_000},
        {"audio": "samples", "rate": 16_000},
        {"audio": b"", "rate": True},
    ):
        with pytest.raises(RemoteProtocolError, match="bad audio chunk"):
            AudioChunk.from_wire(body)


def test_transcribe_params_round_trip() -> None:
    params = TranscribeParams("w", SECOND * 3, 16_000, "translate", "fr", "earlier", 0.2, True)
    assert TranscribeParams.from_wire(params.to_wire()) == params
    assert params.seconds == 3.0


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"audio": b""}, "at least one"),
        ({"audio": b"\x00"}, "whole 16-bit samples"),
        ({"audio": SECOND * 31}, f"at most {WINDOW_SECONDS:g} s"),
        ({"sample_rate": 100}, "sample_rate must be between"),
        ({"task": "summarize"}, "task must be one of transcribe, translate"),
        ({"language": "English"}, "ISO 639-1"),
        ({"prompt": "p" * 4001}, "prompt is longer"),
        ({"temperature": 1.5}, "temperature must be between 0 and 1"),
        ({"timestamps": 1}, "timestamps should be a boolean"),
    ],
)
def test_transcribe_params_refuse(changes: dict[str, Any], why: str) -> None:
    wire = TranscribeParams("w", SECOND).to_wire() | changes
    with pytest.raises(RemoteProtocolError, match=why):
        TranscribeParams.from_wire(wire)


def test_a_window_is_counted_at_its_own_rate() -> None:
    # 30 s at 48 kHz is a window too: the limit is in seconds, not bytes.
    assert TranscribeParams("w", b"\x00\x00" * 48_000 * 30, 48_000).seconds == 30.0
    assert pcm_seconds(b"\x00\x00" * 8000, 16_000) == 0.5


def test_a_transcript_keeps_its_segments_inside_the_window() -> None:
    heard = Transcript("hello there", "en", [], 3, 2).to_wire()
    heard["segments"] = [
        {"start": -1.0, "end": 2.0, "text": "hello"},
        {"start": 2.5, "end": 99.0, "text": "there"},
        {"start": 3.0, "end": 1.0, "text": "!"},
    ]
    parsed = Transcript.from_wire(heard, seconds=4.0)
    assert [(s.start, s.end) for s in parsed.segments] == [(0.0, 2.0), (2.5, 4.0), (3.0, 3.0)]
    assert (parsed.prompt_tokens, parsed.completion_tokens) == (3, 2)


@pytest.mark.parametrize(
    "changes",
    [
        {"text": 5},
        {"text": "x" * 100_001},
        {"language": "klingon"},
        {"segments": [{"start": "0", "end": 1.0, "text": "a"}]},
        {"segments": [{"start": float("inf"), "end": 1.0, "text": "a"}]},
        {"segments": [{}] * 2001},
        {"completion_tokens": -1},
        {"prompt_tokens": 2**40},
    ],
)
def test_a_transcript_from_a_peer_is_checked(changes: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError, match="bad transcript"):
        Transcript.from_wire(Transcript("ok").to_wire() | changes, 30.0)
