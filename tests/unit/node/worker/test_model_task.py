"""What a model directory serves, told from its files before anything is loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from node.worker.loading import task_of
from node.worker.model_store import model_task


@pytest.mark.parametrize(
    ("config", "task"),
    [
        ({"architectures": ["LlamaForCausalLM"]}, "text-generation"),
        ({"architectures": ["VitsModel"]}, "text-to-speech"),
        ({"architectures": ["SpeechT5ForTextToSpeech"]}, "text-to-speech"),
        ({"architectures": ["WhisperForConditionalGeneration"]}, "speech-to-text"),
        (
            {"architectures": ["LlavaForConditionalGeneration"], "vision_config": {}},
            "image-to-text",
        ),
        ({"architectures": ["BlipForConditionalGeneration"], "vision_config": {}}, "image-to-text"),
        ({"architectures": ["GitForCausalLM"], "vision_config": {}}, "image-to-text"),
        ({"architectures": ["CLIPModel"], "vision_config": {}}, None),  # no head that writes
        ({"architectures": ["SpeechT5ForSpeechToText"]}, None),  # no runner for it
        ({"architectures": "LlamaForCausalLM"}, None),
        ({}, None),
    ],
)
def test_a_config_tells_the_task(tmp_path: Path, config: dict[str, Any], task: str | None) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert model_task(tmp_path) == task
    assert task_of(str(tmp_path)) == (task or "text-generation")


def test_without_a_readable_config(tmp_path: Path) -> None:
    assert model_task(tmp_path) is None
    (tmp_path / "config.json").write_text("[1, 2")
    assert model_task(tmp_path) is None
    assert task_of("org/not-here") == "text-generation"
