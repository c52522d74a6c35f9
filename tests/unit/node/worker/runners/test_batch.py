"""Continuous batching on a tiny random Llama: requests share decoding steps, join and
leave the running batch one step at a time, and get exactly what they would alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from node.worker.runners.base import Delta, no_progress
from node.worker.runners.batch import BatchEngine, Finished
from node.worker.runners.kv import MAX_SLOTS, SLOT_TOKENS, default_slots
from node.worker.runners.text import TextRunner
from protocols import GenerateParams
from tests.tiny_models import build_tiny_llama

# Models (tiny ones built here, or the real default) take seconds to build and load.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def runner(path: Path) -> Iterator[TextRunner]:
    runner = TextRunner.load("tiny", path, "cpu", None, 4, no_progress)
    yield runner
    runner.close()


PROMPTS = ["hello world", "the capital of", "a b c d e f g", "what is the capital of france"]


def params(prompt: str, **kw: Any) -> GenerateParams:
    return GenerateParams(model="tiny", prompt=prompt, **kw)


def text_of(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


def alone(path: Path, prompt: str, max_new: int, dtype: torch.dtype = torch.float32) -> list[int]:
    """Greedy tokens from transformers' own ``generate``, one request at a time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()  # type: ignore[no-untyped-call]
    ids = AutoTokenizer.from_pretrained(path)(prompt, return_tensors="pt")["input_ids"]
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False
    )
    return [int(t) for t in out[0, ids.shape[1] :]]


class Gate:
    """A stop flag the test controls; counts how often the engine looked once it was set."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.looked_after_set = 0

    def is_set(self) -> bool:
        if self.event.is_set():
            self.looked_after_set += 1
            return True
        return False


def greedy(logits: torch.Tensor) -> int:
    return int(logits.argmax())


def engine_of(
    path: Path, max_batch: int, dtype: torch.dtype = torch.float32
) -> tuple[BatchEngine, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()  # type: ignore[no-untyped-call]
    return BatchEngine(model, set(), max_batch, "tiny"), AutoTokenizer.from_pretrained(path)


# float16: what a GPU node without bfloat16 (DirectML, or an older CUDA card) loads in.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_staggered_requests_get_what_they_would_alone(path: Path, dtype: torch.dtype) -> None:
    engine, tokenizer = engine_of(path, 4, dtype)
    try:
        expected = [alone(path, p, 24, dtype) for p in PROMPTS]
        channels, streams, firsts = [], [], []
        for prompt in PROMPTS:  # each joins while the earlier ones are mid-answer
            ids = tokenizer(prompt)["input_ids"]
            channels.append(engine.submit(ids, 24, greedy, Gate()))
            streams.append(iter(channels[-1]))
            firsts.append(next(streams[-1]))  # its first token: it is in the batch now
        got = [[first, *stream] for first, stream in zip(firsts, streams, strict=True)]
        assert got == expected
        assert all(c.finished == Finished("length", 24) for c in channels)
    finally:
        engine.close()


def test_requests_share_decoding_steps(path: Path) -> None:
    engine, tokenizer = engine_of(path, 8)
    try:
        most = 0

        def watch(channel: Any) -> None:
            nonlocal most
            for _ in channel:
                most = max(most, engine.running)

        channels = [engine.submit(tokenizer(p)["input_ids"], 200, greedy, Gate()) for p in PROMPTS]
        threads = [threading.Thread(target=watch, args=(c,)) for c in channels]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert most == len(PROMPTS)  # all four were in one batch at once
    finally:
        engine.close()


def test_a_cancelled_request_leaves_and_the_others_go_on(path: Path) -> None:
    engine, tokenizer = engine_of(path, 4)
    try:
        gates = [Gate() for _ in PROMPTS]
        # The one to cancel could go on for a long time; the others stop at 60.
        channels = [
            engine.submit(tokenizer(p)["input_ids"], 2000 if i == 1 else 60, greedy, g)
            for i, (p, g) in enumerate(zip(PROMPTS, gates, strict=True))
        ]
        first = iter(channels[1])
        for _ in range(5):
            next(first)
        gates[1].event.set()
        list(first)
        assert channels[1].finished is not None
        assert channels[1].finished.reason == "cancelled"
        assert channels[1].finished.tokens < 2000
        # It left at the first step after the flag was set: the engine looked once.
        assert gates[1].looked_after_set == 1
        others = [list(channels[i]) for i in (0, 2, 3)]
        assert others == [alone(path, PROMPTS[i], 60) for i in (0, 2, 3)]
    finally:
        engine.close()


def test_requests_past_the_slots_wait_their_turn(path: Path) -> None:
    engine, tokenizer = engine_of(path, 2)
    try:
        most = 0
        order: list[int] = []
        lock = threading.Lock()

        def consume(i: int, channel: Any) -> None:
            nonlocal most
            for _ in channel:
                most = max(most, engine.running)
            with lock:
                order.append(i)

        prompts = PROMPTS * 2
        channels = [
            engine.submit(tokenizer(p)["input_ids"], 10 + i, greedy, Gate())
            for i, p in enumerate(prompts)
        ]
        threads = [threading.Thread(target=consume, args=(i, c)) for i, c in enumerate(channels)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert most == 2
        assert all(c.finished == Finished("length", 10 + i) for i, c in enumerate(channels))
        assert order[:2] == [0, 1]  # first come, first served
    finally:
        engine.close()


def test_a_failing_model_fails_its_callers_and_the_engine_recovers(path: Path) -> None:
    engine, tokenizer = engine_of(path, 4)
    model = engine._model
    original = model.forward
    calls = 0

    def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("device lost")
        return original(*args, **kwargs)

    try:
        model.forward = flaky
        channel = engine.submit(tokenizer("hello")["input_ids"], 20, greedy, Gate())
        with pytest.raises(RuntimeError, match="device lost"):
            list(channel)
        again = engine.submit(tokenizer("hello")["input_ids"], 5, greedy, Gate())
        assert len(list(again)) == 5
    finally:
        model.forward = original
        engine.close()


def test_close_ends_running_and_waiting_requests(path: Path) -> None:
    engine, tokenizer = engine_of(path, 1)
    running = engine.submit(tokenizer("hello")["input_ids"], 100_000, greedy, Gate())
    waiting = engine.submit(tokenizer("world")["input_ids"], 10, greedy, Gate())
    next(iter(running))
    engine.close()
    list(running)
    list(waiting)
    assert running.finished is not None and running.finished.reason == "cancelled"
    assert waiting.finished == Finished("cancelled", 0)
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit([1], 1, greedy, Gate())


def test_runner_answers_in_parallel_as_it_would_alone(runner: TextRunner) -> None:
    cases = [
        params(PROMPTS[0], max_tokens=30, temperature=0.0),
        params(PROMPTS[1], max_tokens=12, temperature=1.0, seed=7),
        params(PROMPTS[2], max_tokens=25, temperature=0.8, top_p=0.5, seed=3),
        params(PROMPTS[3], max_tokens=40, temperature=0.0, stop=[" the"]),
    ]
    expected = [list(runner.generate(p, threading.Event())) for p in cases]
    results: dict[int, list[Delta]] = {}

    def one(i: int) -> None:
        results[i] = list(runner.generate(cases[i], threading.Event()))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [text_of(results[i]) for i in range(len(cases))] == [text_of(e) for e in expected]
    assert [results[i][-1] for i in range(len(cases))] == [e[-1] for e in expected]


def test_default_slots_follow_the_cache_size_and_free_memory(path: Path) -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)  # 2 layers, 2 kv heads of 16, 1,024 positions
    per_slot = 2 * 2 * 2 * 16 * 4 * 1024  # keys and values, float32, a full context
    assert default_slots(config, 4, 2 * 5 * per_slot) == 5  # half the free memory
    assert default_slots(config, 4, 2 * 5 * per_slot - 1) == 4
    assert default_slots(config, 4, 0) == 1
    assert default_slots(config, 4, 1 << 50) == MAX_SLOTS
    config.max_position_embeddings = 1 << 20  # a long context is budgeted SLOT_TOKENS
    assert default_slots(config, 2, 2 * 3 * (2 * 2 * 2 * 16 * 2 * SLOT_TOKENS)) == 3


def test_a_runner_loaded_with_no_slot_count_takes_them_from_free_memory(path: Path) -> None:
    per_slot = 2 * 2 * 2 * 16 * 4 * 1024
    runner = TextRunner.load("tiny", path, "cpu", None, 0, no_progress, lambda: 14 * per_slot)
    try:
        assert runner.info.max_batch == 7
    finally:
        runner.close()
