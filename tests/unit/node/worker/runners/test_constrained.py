"""Constrained decoding inside the batch: JSON that parses whatever the weights, next to
unconstrained sequences of the same batch."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from node.worker.runners.base import no_progress
from node.worker.runners.text import TextRunner
from protocols import ChatMessage, GenerateParams
from tests.tiny_models import build_tiny_bpe_llama

pytestmark = pytest.mark.slow
SCHEMA = {
    "type": "object",
    "properties": {"city": {"enum": ["paris", "rome"]}, "ok": {"type": "boolean"}},
    "required": ["city", "ok"],
}


def test_constrained_and_free_sequences_share_a_batch(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    runner = TextRunner.load("m", build_tiny_bpe_llama(tmp_path / "m"), "cpu", None, 6, no_progress)
    ask = [ChatMessage("user", "hi")]

    def run(params: GenerateParams) -> tuple[str, str | None]:
        deltas = list(runner.generate(params, threading.Event()))
        return "".join(d.text for d in deltas), deltas[-1].finish_reason

    calls = [
        GenerateParams(
            model="m",
            messages=ask,
            max_tokens=40,
            temperature=1.0,
            seed=i,
            response_format="json_schema",
            json_schema=SCHEMA,
        )
        for i in range(3)
    ] + [GenerateParams(model="m", messages=ask, max_tokens=40, temperature=1.0, seed=9)] * 2
    calls.append(
        GenerateParams(model="m", messages=ask, max_tokens=40, response_format="json_object")
    )
    try:
        with ThreadPoolExecutor(len(calls)) as pool:
            results = list(pool.map(run, calls))
    finally:
        runner.close()
    for text, reason in results[:3]:
        assert reason == "stop"
        answer = json.loads(text)
        assert answer["city"] in ("paris", "rome") and isinstance(answer["ok"], bool)
    # The free ones are left alone: the same seed gives the same text, not JSON.
    assert results[3] == results[4] and results[3][1] == "length"
    text, reason = results[5]
    assert reason == "length" or isinstance(json.loads(text), dict)
