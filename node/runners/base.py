"""The contract between the node and whatever actually runs a model.

A runner is synchronous: the scheduler calls ``generate`` in a worker thread and relays
the deltas into trio. ``cancelled`` is set when the caller goes away; a runner checks it
between tokens and stops early, so a disconnected client stops the work on the node.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from protocols import GenerateParams, ModelInfo

# Progress of long work (download, conversion, loading): a message and a fraction or None.
Progress = Callable[[str, float | None], None]


def no_progress(message: str, fraction: float | None) -> None:
    """A ``Progress`` that reports nothing."""


@dataclass(frozen=True)
class Delta:
    """A piece of generated text, with token counts so far.

    The last delta of a generation has ``finish_reason`` set: ``stop`` (end of text or
    a stop sequence), ``length`` (max_tokens reached) or ``cancelled``.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None


class Runner(Protocol):
    @property
    def info(self) -> ModelInfo:
        """What the node advertises about this model."""
        ...

    def generate(self, params: GenerateParams, cancelled: threading.Event) -> Iterator[Delta]:
        """Yield deltas until done; the last one carries ``finish_reason``."""
        ...

    def close(self) -> None:
        """Release the model's memory."""
        ...
