"""The speech and picture wire values against arbitrary input, as every decoder in
``protocols/`` is (test_hostile_input): only ``RemoteProtocolError`` may come out."""

from __future__ import annotations

from typing import Any

from hypothesis import given

from protocols import (
    AudioChunk,
    Segment,
    SpeechParams,
    TranscribeParams,
    Transcript,
    VisionMessage,
    VisionParams,
)
from tests.unit.protocols.test_hostile_input import near_misses, refused_only

PNG = b"\x89PNG\r\n\x1a\n"
VISION = VisionParams("m", [VisionMessage("user", [0, "hi"])], [PNG]).to_wire()
TRANSCRIPT = Transcript("hi", "en", [Segment(0.0, 1.0, "hi")], 1, 2).to_wire()


@given(
    near_misses(SpeechParams("m", "hello", "v", 1.0).to_wire())
    | near_misses(TranscribeParams("m", b"\x00\x00" * 10, timestamps=True).to_wire())
    | near_misses(VISION)
    | near_misses(AudioChunk(b"\x00\x00", 16_000).to_wire())
    | near_misses(TRANSCRIPT)
)
def test_media_params_and_answers(body: dict[str, Any]) -> None:
    refused_only(SpeechParams.from_wire, body)
    refused_only(TranscribeParams.from_wire, body)
    refused_only(VisionParams.from_wire, body)
    refused_only(AudioChunk.from_wire, body)
    refused_only(Transcript.from_wire, body, 30.0)


@given(near_misses(VISION["messages"][0]) | near_misses(TRANSCRIPT["segments"][0]))
def test_nested_parts(part: dict[str, Any]) -> None:
    refused_only(VisionParams.from_wire, VISION | {"messages": [part]})
    refused_only(Transcript.from_wire, TRANSCRIPT | {"segments": [part]}, 30.0)
