"""What a request leaves unset comes from the model's generation config; a generation
caught in a loop is ended."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig

from node.worker.runners.base import no_progress
from node.worker.runners.sampling import Sampling
from node.worker.runners.sampling import picker as _picker
from node.worker.runners.text import LOOP_SPAN, TextRunner, looping
from protocols import GenerateParams
from tests.tiny_models import build_tiny_llama

pytestmark = pytest.mark.slow


def test_a_config_that_does_not_sample_is_greedy() -> None:
    assert Sampling.of(GenerationConfig()) == Sampling(0.0, 1.0, 0, 1.0)  # type: ignore[no-untyped-call]
    penalised = GenerationConfig(repetition_penalty=1.3)  # type: ignore[no-untyped-call]
    assert Sampling.of(penalised) == Sampling(0.0, 1.0, 0, 1.3)
    sampled = GenerationConfig(do_sample=True, temperature=0.6, top_p=0.9, top_k=20)  # type: ignore[no-untyped-call]
    assert Sampling.of(sampled) == Sampling(0.6, 0.9, 20, 1.0)


def test_the_request_overrides_each_default_it_sets() -> None:
    logits = torch.tensor([0.0, 3.0, 2.9, -1.0])
    params = GenerateParams(model="m", prompt="x")
    assert _picker(params, Sampling(), [0]) is None  # greedy: the engine batches it
    sampled = _picker(GenerateParams(model="m", prompt="x", seed=1), Sampling(1.0, 0.5), [0])
    assert sampled is not None
    assert {sampled(logits) for _ in range(20)} == {1}  # top_p 0.5 keeps the best token only
    hot = _picker(GenerateParams(model="m", prompt="x", top_p=1.0, seed=1), Sampling(1.0, 0.5), [])
    assert hot is not None
    assert {hot(logits) for _ in range(50)} > {1}  # the request's top_p wins
    cold = _picker(GenerateParams(model="m", prompt="x", temperature=0.0), Sampling(1.0), [])
    assert cold is None


def test_top_k_keeps_only_the_best_tokens() -> None:
    pick = _picker(GenerateParams(model="m", prompt="x", seed=3), Sampling(5.0, 1.0, 2), [])
    assert pick is not None
    assert {pick(torch.tensor([0.0, 1.0, 0.9, 0.8])) for _ in range(100)} == {1, 2}


def test_the_repetition_penalty_steers_greedy_away_from_the_context() -> None:
    pick = _picker(GenerateParams(model="m", prompt="x"), Sampling(repetition_penalty=2.0), [1])
    assert pick is not None
    assert pick(torch.tensor([0.0, 3.0, 2.0])) == 2  # 3.0 / 2 < 2.0
    assert pick(torch.tensor([0.0, 3.0, 2.0, 1.6])) == 3  # 2 was just picked: penalised too


def test_loops_are_found_however_long_their_block() -> None:
    assert looping([7] * LOOP_SPAN)
    assert not looping([7] * (LOOP_SPAN - 1))
    block = list(range(20))
    assert looping([1, 2, 3, *block * 4])
    assert not looping([*block * 3, *block[:19]])
    assert not looping(list(range(200)))


@pytest.fixture(scope="module")
def sampling_llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TextRunner]:
    torch.set_num_threads(1)
    path = build_tiny_llama(tmp_path_factory.mktemp("sampling") / "tiny")
    config = GenerationConfig.from_pretrained(path)
    config.do_sample, config.temperature, config.top_k = True, 1.5, 0
    config.save_pretrained(path)
    runner = TextRunner.load("tiny", Path(path), "cpu", None, 2, no_progress)
    yield runner
    runner.close()


def test_a_model_that_asks_to_sample_samples_unless_told_not_to(
    sampling_llama: TextRunner,
) -> None:
    def text(**kw: object) -> str:
        params = GenerateParams(model="tiny", prompt="hello world", max_tokens=12, **kw)  # type: ignore[arg-type]
        return "".join(d.text for d in sampling_llama.generate(params, threading.Event()))

    assert sampling_llama.defaults.temperature == 1.5
    assert len({text(seed=s) for s in range(4)}) > 1  # its own default: sampled
    assert len({text(seed=s, temperature=0.0) for s in range(4)}) == 1  # the request: greedy
