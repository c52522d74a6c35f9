"""The contract between the node and whatever actually runs a model.

A runner is synchronous: the scheduler calls ``generate`` in a worker thread and relays
the deltas into trio. ``cancelled`` is set when the caller goes away; a runner checks it
between tokens and stops early, so a disconnected client stops the work on the node.

A text model is a ``Runner``; an image model is an ``ImageRunner``, which checks
``cancelled`` between denoising steps and raises ``GenerationCancelled`` when it is set.
A text-to-speech model is a ``SpeechRunner`` (audio as it is made), a speech-to-text model a
``TranscriptionRunner`` and an image-to-text model a ``VisionRunner`` (text deltas, as a
text model's).
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from protocols import (
    AudioChunk,
    GenerateParams,
    ImageParams,
    ModelInfo,
    SpeechParams,
    TokenLogprob,
    ToolCall,
    TranscribeParams,
    Transcript,
    VisionParams,
)

# Progress of long work (download, conversion, loading): a message and a fraction or None.
Progress = Callable[[str, float | None], None]


def no_progress(message: str, fraction: float | None) -> None:
    """A ``Progress`` that reports nothing."""


# A denoising step done: (step, of steps). Called from the runner's thread.
Steps = Callable[[int, int], None]


def no_steps(step: int, steps: int) -> None:
    """A ``Steps`` that reports nothing."""


@dataclass(frozen=True)
class Delta:
    """A piece of generated text, with token counts so far.

    The last delta of a generation has ``finish_reason`` set: ``stop`` (end of text or
    a stop sequence), ``length`` (max_tokens reached), ``tool_calls`` (the model ended
    after calling tools) or ``cancelled``.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None
    # The log probabilities of the tokens behind this piece, when the call asked for them.
    logprobs: tuple[TokenLogprob, ...] = ()
    # Tool calls completed in this piece (parsed out of the model's output).
    tool_calls: tuple[ToolCall, ...] = ()


@runtime_checkable
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


class GenerationCancelled(Exception):
    """The caller went away and the runner stopped before finishing."""


@runtime_checkable
class ImageRunner(Protocol):
    @property
    def info(self) -> ModelInfo:
        """What the node advertises about this model."""
        ...

    def generate_images(
        self, params: ImageParams, cancelled: threading.Event, steps: Steps = no_steps
    ) -> list[bytes]:
        """Generate ``params.n`` images, each as PNG bytes, calling ``steps`` after each
        denoising step.

        Raises ``GenerationCancelled`` once ``cancelled`` is set.
        """
        ...

    def close(self) -> None:
        """Release the model's memory."""
        ...


@runtime_checkable
class SpeechRunner(Protocol):
    @property
    def info(self) -> ModelInfo: ...

    def speak(self, params: SpeechParams, cancelled: threading.Event) -> Iterator[AudioChunk]:
        """Yield the speech as it is made; stop once ``cancelled`` is set."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class TranscriptionRunner(Protocol):
    @property
    def info(self) -> ModelInfo: ...

    def transcribe(self, params: TranscribeParams, cancelled: threading.Event) -> Transcript:
        """What is said in ``params.audio``. Raises ``GenerationCancelled`` once
        ``cancelled`` is set."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class VisionRunner(Protocol):
    @property
    def info(self) -> ModelInfo: ...

    def describe(self, params: VisionParams, cancelled: threading.Event) -> Iterator[Delta]:
        """Yield the answer's deltas until done; the last one carries ``finish_reason``."""
        ...

    def close(self) -> None: ...


# Whatever a node can serve under a model id.
ModelRunner = Runner | ImageRunner | SpeechRunner | TranscriptionRunner | VisionRunner


@runtime_checkable
class Measured(Protocol):
    """A runner that measures its own throughput (every sequence of its batch together)."""

    @property
    def tokens_per_s(self) -> float: ...


def drop_model(runner: Any, busy: threading.Lock | None = None) -> None:
    """Take ``runner._model`` away (under ``busy``, so a call in progress finishes first)
    and give its memory back; this function then holds the model's last reference."""
    with busy or contextlib.nullcontext():
        model, runner._model = runner._model, None
    if model is not None:
        device = str(model.device)
        del model
        free_device_memory(device)


def free_device_memory(device: str) -> None:
    """After a model's last reference is dropped: collect it, and give its GPU memory back."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def refuse_extras(params: GenerateParams, model_id: str) -> None:
    """``ValueError`` naming the first field of ``params`` that a runner without tools,
    constrained decoding or logprobs would otherwise have to drop."""
    asked = params.engine_field()
    if asked is not None:
        raise ValueError(f"{asked}: {model_id} cannot honour it on this node")
