"""The transformers runner, on a tiny random Llama and on the real default model."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from node.worker.handlers import NodeService
from node.worker.loading import load_runner
from node.worker.models import DEFAULT_MODEL
from node.worker.roster import Roster
from node.worker.runners.base import Delta, no_progress
from node.worker.runners.text import TextRunner, reads_tools
from protocols import ChatMessage, GenerateParams, ModelInfo
from protocols.operator import ModelSpec
from tests.stand_in_directml import stand_in_directml
from tests.tiny_models import (
    CHAT_TEMPLATE,
    CONTEXT_LENGTH,
    Converted,
    build_tiny_llama,
    converted_default_model,
)
from tests.unit.node.p2p.test_rpc import connected

# Models (tiny ones built here, or the real default) take seconds to build and load.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TextRunner]:
    torch.set_num_threads(1)
    path = build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    runner = TextRunner.load("tiny", path, "cpu", None, 4, no_progress)
    yield runner
    runner.close()


@pytest.fixture(scope="session")
def default_model(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    return converted_default_model(tmp_path_factory)


def run(runner: TextRunner, cancelled: threading.Event | None = None, **kw: object) -> list[Delta]:
    kw.setdefault("prompt", "hello world")
    params = GenerateParams(model="tiny", **kw)  # type: ignore[arg-type]
    return list(runner.generate(params, cancelled or threading.Event()))


def text_of(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


def test_info(tiny: TextRunner) -> None:
    assert tiny.info == ModelInfo(
        "tiny",
        "text-generation",
        "float32",
        CONTEXT_LENGTH,
        4,
        "ready",
        chat=True,
        constrained=True,
    )


def test_streams_several_deltas_then_finishes(tiny: TextRunner) -> None:
    deltas = run(tiny, max_tokens=20, temperature=0.0)
    assert len(deltas) > 3
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert deltas[-1].finish_reason == "length"
    counts = [d.completion_tokens for d in deltas]
    assert counts == sorted(counts)
    assert all(d.prompt_tokens == 2 for d in deltas)
    assert text_of(deltas).strip()


@pytest.mark.parametrize("max_tokens", [1, 7, 32])
def test_max_tokens_counts_generated_tokens(tiny: TextRunner, max_tokens: int) -> None:
    final = run(tiny, max_tokens=max_tokens, temperature=0.0)[-1]
    assert (final.finish_reason, final.completion_tokens) == ("length", max_tokens)


def test_chat_messages_use_the_chat_template(tiny: TextRunner) -> None:
    messages = [ChatMessage("system", "be good"), ChatMessage("user", "what is the capital")]
    deltas = run(tiny, prompt=None, messages=messages, max_tokens=5, temperature=0.0)
    # "<s> system : be good </s> <s> user : what is the capital </s> <s> assistant :"
    assert deltas[-1].prompt_tokens == 6 + 8 + 3
    assert deltas[-1].completion_tokens == 5


def test_temperature_zero_is_deterministic(tiny: TextRunner) -> None:
    first = text_of(run(tiny, max_tokens=30, temperature=0.0))
    assert first == text_of(run(tiny, max_tokens=30, temperature=0.0, seed=99))


def test_same_seed_same_sample(tiny: TextRunner) -> None:
    samples = [text_of(run(tiny, max_tokens=30, temperature=1.0, seed=s)) for s in (1, 1, 2, 3)]
    assert samples[0] == samples[1]
    assert len(set(samples)) > 1  # and the seed does matter
    nucleus = text_of(run(tiny, max_tokens=30, temperature=1.0, top_p=0.3, seed=5))
    assert nucleus == text_of(run(tiny, max_tokens=30, temperature=1.0, top_p=0.3, seed=5))


@pytest.mark.parametrize("words", [1, 2])
def test_stop_sequence_cuts_the_text(tiny: TextRunner, words: int) -> None:
    full = text_of(run(tiny, max_tokens=40, temperature=0.0)).split()
    # A stop sequence of one or two words (the latter spans two streamed pieces).
    stop = " " + " ".join(full[20 : 20 + words])
    expected = " ".join(full)[: " ".join(full).find(stop)]
    deltas = run(tiny, max_tokens=40, temperature=0.0, stop=[stop, "never appears"])
    assert text_of(deltas) == expected
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].completion_tokens < 40


def test_cancel_from_another_thread_stops_generation(tiny: TextRunner) -> None:
    cancelled = threading.Event()
    first_piece = threading.Event()

    def cancel_once_streaming() -> None:
        first_piece.wait(10)
        cancelled.set()

    canceller = threading.Thread(target=cancel_once_streaming)
    canceller.start()
    deltas = []
    params = GenerateParams(model="tiny", prompt="hello", max_tokens=1000, temperature=0.0)
    for delta in tiny.generate(params, cancelled):
        deltas.append(delta)
        first_piece.set()
    canceller.join()
    assert deltas[-1].finish_reason == "cancelled"
    assert 0 < deltas[-1].completion_tokens < 1000


def test_cancelled_before_start(tiny: TextRunner) -> None:
    cancelled = threading.Event()
    cancelled.set()
    assert run(tiny, cancelled, max_tokens=10) == [Delta("", 2, 0, "cancelled")]


def test_abandoned_stream_frees_the_model(tiny: TextRunner) -> None:
    stream = tiny.generate(
        GenerateParams(model="tiny", prompt="hello", max_tokens=1000, temperature=0.0),
        threading.Event(),
    )
    next(iter(stream))
    stream.close()  # type: ignore[attr-defined]
    assert run(tiny, max_tokens=3, temperature=0.0)[-1].completion_tokens == 3


def test_concurrent_calls_take_turns(tiny: TextRunner) -> None:
    expected = text_of(run(tiny, max_tokens=25, temperature=0.0))
    results: list[str] = []

    def one() -> None:
        results.append(text_of(run(tiny, max_tokens=25, temperature=0.0)))

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 3


def test_prompt_longer_than_context_is_refused(tiny: TextRunner) -> None:
    params = GenerateParams(model="tiny", prompt="hello " * (CONTEXT_LENGTH + 10))
    with pytest.raises(ValueError, match=f"context length of {CONTEXT_LENGTH} tokens"):
        tiny.generate(params, threading.Event())


def test_empty_prompt_is_refused(tiny: TextRunner) -> None:
    with pytest.raises(ValueError, match="empty"):
        tiny.generate(GenerateParams(model="tiny", prompt=""), threading.Event())


def test_closed_runner_refuses_work(tmp_path: Path) -> None:
    runner = TextRunner.load("tiny", build_tiny_llama(tmp_path), "cpu", None, 1, no_progress)
    runner.close()
    runner.close()
    with pytest.raises(RuntimeError, match="closed"):
        run(runner, max_tokens=3)


def test_a_directml_node_loads_on_the_device_torch_directml_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directml = stand_in_directml(device="cpu")
    monkeypatch.setitem(sys.modules, "torch_directml", directml)
    path = build_tiny_llama(tmp_path / "tiny")
    runner = load_runner(
        ModelSpec(str(path), slots=2),
        tmp_path / "data",
        "directml",
        no_progress,
        lambda needs: None,
    )
    try:
        assert isinstance(runner, TextRunner)
        assert directml.asked == [0]  # the default adapter
        assert runner.info.max_batch == 2
        deltas = run(runner, max_tokens=6, temperature=0.0)
        assert (deltas[-1].finish_reason, deltas[-1].completion_tokens) == ("length", 6)
        assert text_of(deltas).strip()
    finally:
        runner.close()


def test_default_model_knows_the_capital_of_france(default_model: Converted) -> None:
    torch.set_num_threads(1)
    runner = TextRunner.load(DEFAULT_MODEL, default_model.path, "cpu", None, 1, no_progress)
    try:
        params = GenerateParams(
            model=DEFAULT_MODEL,
            messages=[ChatMessage("user", "What is the capital of France?")],
            max_tokens=30,
            temperature=0.0,
        )
        deltas = list(runner.generate(params, threading.Event()))
    finally:
        runner.close()
    assert "Paris" in text_of(deltas)
    assert deltas[-1].finish_reason == "stop"  # the model ended its answer itself
    assert 0 < deltas[-1].completion_tokens < 30


def test_a_template_that_renders_tools_is_told_apart() -> None:
    assert not reads_tools(None) and not reads_tools(CHAT_TEMPLATE)
    assert reads_tools("{% if tools %}{{ tools | tojson }}{% endif %}{{ messages }}")
    assert not reads_tools("{{ messages }} {{ toolsmith }}")
    assert reads_tools({"default": CHAT_TEMPLATE, "tool_use": "{{ messages }}"})


async def test_several_choices_run_in_one_batch_each_with_its_own_seed(tiny: TextRunner) -> None:
    service = NodeService(Roster.of({"tiny": tiny}, 1, 1), lambda: 0)
    asked = GenerateParams(model="tiny", prompt="the cat", max_tokens=8, temperature=1.0)
    async with connected(service) as (client, _):
        sampled = await client.call("generate", replace(asked, n=3, seed=5, stream=False).to_wire())
        again = await client.call("generate", replace(asked, n=3, seed=5, stream=False).to_wire())
        greedy = replace(asked, n=2, temperature=0.0, stream=False)
        same = await client.call("generate", greedy.to_wire())
    texts = [c["text"] for c in sampled["choices"]]
    assert len(set(texts)) == 3  # a seed each
    assert [c["text"] for c in again["choices"]] == texts  # the seeds follow from the one given
    # Choice i is what the call with seed 5 + i alone would write.
    alone = "".join(d.text for d in tiny.generate(replace(asked, seed=6), threading.Event()))
    assert texts[1] == alone
    assert [c["completion_tokens"] for c in sampled["choices"]] == [8, 8, 8]
    assert sampled["completion_tokens"] == 24
    assert same["choices"][0]["text"] == same["choices"][1]["text"]


@pytest.mark.parametrize(("device", "cudnn_after"), [("cpu", True), ("cuda", False)])
def test_a_model_loaded_on_cuda_keeps_attention_off_the_cudnn_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str, cudnn_after: bool
) -> None:
    # Its per-shape plans made every decoding step a new plan (docs/benchmarks.md, GPU).
    moved: list[str] = []

    def to(self: torch.nn.Module, where: str) -> torch.nn.Module:
        moved.append(where)  # nowhere, in fact: this host has no GPU
        return self

    monkeypatch.setattr(torch.nn.Module, "to", to)
    enabled = torch.backends.cuda.cudnn_sdp_enabled()  # type: ignore[no-untyped-call]
    torch.backends.cuda.enable_cudnn_sdp(True)
    try:
        path = build_tiny_llama(tmp_path)
        runner = TextRunner.load("tiny", path, device, "float32", 2, no_progress)
        runner.close()
        assert torch.backends.cuda.cudnn_sdp_enabled() is cudnn_after  # type: ignore[no-untyped-call]
        assert moved == [device]
    finally:
        torch.backends.cuda.enable_cudnn_sdp(enabled)
