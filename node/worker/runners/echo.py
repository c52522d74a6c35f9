"""A torch-free runner that echoes the prompt back word by word.

It exercises every path a real model does (streaming, token counts, stop sequences,
max_tokens, cancellation) in microseconds, for tests and for measuring the swarm's
own overhead in benchmarks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from node.worker.runners.base import Delta, refuse_extras
from protocols import GenerateParams, ModelInfo


class EchoRunner:
    def __init__(self, model_id: str = "echo", delay: float = 0.0, max_batch: int = 8) -> None:
        self._model_id = model_id
        self._delay = delay  # seconds per token: lets tests hold a node busy
        self._max_batch = max_batch

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            self._model_id, "text-generation", "none", 1 << 20, self._max_batch, "ready"
        )

    def generate(self, params: GenerateParams, cancelled: threading.Event) -> Iterator[Delta]:
        refuse_extras(params, self._model_id)  # an echo has no logits and no template
        return self._echo(params, cancelled)

    def _echo(self, params: GenerateParams, cancelled: threading.Event) -> Iterator[Delta]:
        if params.messages is not None:
            source = params.messages[-1].content
            prompt_tokens = sum(len(m.content.split()) + 1 for m in params.messages)
        else:
            source = params.prompt or ""
            prompt_tokens = len(source.split())
        words = source.split() or ["(empty)"]
        produced = ""
        for count, word in enumerate(words, start=1):
            if cancelled.is_set():
                yield Delta("", prompt_tokens, count - 1, "cancelled")
                return
            if self._delay:
                time.sleep(self._delay)
            piece = word if count == 1 else " " + word
            stop = next((s for s in params.stop if s in produced + piece), None)
            if stop is not None:
                cut = (produced + piece).index(stop)
                yield Delta((produced + piece)[len(produced) : cut], prompt_tokens, count, "stop")
                return
            produced += piece
            if count >= params.max_tokens:
                yield Delta(piece, prompt_tokens, count, "length")
                return
            yield Delta(piece, prompt_tokens, count)
        yield Delta("", prompt_tokens, len(words), "stop")

    def close(self) -> None:
        pass
