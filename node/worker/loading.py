"""How a model spec becomes a runner: resolved, checked against free memory, then loaded
on this peer's device."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

from node.worker.memory import Estimate, estimate
from node.worker.model_store import (
    EMBEDDING,
    IMAGE_TO_TEXT,
    SPEECH_TO_TEXT,
    TEXT_GENERATION,
    TEXT_TO_IMAGE,
    TEXT_TO_SPEECH,
    model_task,
)
from node.worker.runners import EchoRunner, ModelRunner, Progress
from protocols.operator import ModelSpec

# Called with the model's estimated needs (None: not known) before any weight is loaded;
# raises to refuse it.
Admit = Callable[[Estimate | None], None]

ECHO_SLOTS = 8
_LOADING = threading.Lock()


def load_runner(
    spec: ModelSpec,
    data_dir: Path,
    backend: str,
    progress: Progress,
    admit: Admit,
    echo_delay: float = 0.0,
    free_memory: Callable[[], int] | None = None,
) -> ModelRunner:
    """Load ``spec.id``: ``echo`` (or ``echo-*``) needs no torch; anything else is
    resolved from a local path, the Hugging Face cache, or the bundled default model,
    and served by what its directory holds (``model_task``): a diffusers pipeline makes
    images; a text-to-speech, speech-to-text, image-to-text or embedding model gets its
    runner; anything
    else is a transformers causal LM batching ``spec.slots`` generations (0: as many as
    ``free_memory`` holds key/value caches for, once it is loaded)."""
    if is_echo(spec.id):
        return EchoRunner(spec.id, delay=echo_delay, max_batch=spec.slots or ECHO_SLOTS)
    from node.worker.hardware import device_for
    from node.worker.models import resolve

    path = resolve(spec.id, data_dir, progress)
    device = spec.device or device_for(backend)
    # transformers imports its model classes lazily, and two threads importing at once can
    # see a half-imported module: models load from disk one at a time.
    with _LOADING:
        return _load(spec, path, device, data_dir, progress, admit, free_memory)


def _load(
    spec: ModelSpec,
    path: Path,
    device: str,
    data_dir: Path,
    progress: Progress,
    admit: Admit,
    free_memory: Callable[[], int] | None,
) -> ModelRunner:
    from node.worker.models import resolve
    from node.worker.runners.text import TextRunner, default_dtype

    task = model_task(path)
    if task == TEXT_TO_IMAGE:
        from node.worker.runners.image import DiffusersRunner

        admit(estimate(path, None, 0))
        return DiffusersRunner.load(spec.id, path, device, progress)
    if task == TEXT_TO_SPEECH:
        from node.worker.runners.speech import SpeechT5Speech, VitsSpeech

        # Small models whose vocoders sound wrong in half precision: float32 everywhere.
        admit(estimate(path, "float32", 0))
        if "VitsModel" in _architectures(path):
            return VitsSpeech.load(spec.id, path, device, progress)
        return SpeechT5Speech.load(
            spec.id, path, device, progress, lambda model: resolve(model, data_dir, progress)
        )
    dtype = spec.dtype or default_dtype(device)
    if task == SPEECH_TO_TEXT:
        from node.worker.runners.transcribe import WhisperRunner

        admit(estimate(path, dtype, 0))
        return WhisperRunner.load(spec.id, path, device, dtype, progress)
    if task == IMAGE_TO_TEXT:
        from node.worker.runners.vision import load_vision

        admit(estimate(path, dtype, 1))
        return load_vision(spec.id, path, device, dtype, progress)
    if task == EMBEDDING:
        from node.worker.runners.embedding import EmbeddingRunner

        admit(estimate(path, dtype, 0))
        return EmbeddingRunner.load(spec.id, path, device, dtype, progress)
    admit(estimate(path, dtype, spec.slots))
    return TextRunner.load(spec.id, path, device, dtype, spec.slots, progress, free_memory)


def is_echo(model_id: str) -> bool:
    return model_id == "echo" or model_id.startswith("echo-")


def task_of(model_id: str) -> str:
    """The task ``model_id`` will serve, as far as can be told before it is loaded
    (only a local directory shows what it holds; anything else is taken to write text)."""
    local = Path(model_id).expanduser()
    return (model_task(local) if local.is_dir() else None) or TEXT_GENERATION


def _architectures(path: Path) -> set[str]:
    try:
        found = json.loads((path / "config.json").read_text()).get("architectures")
    except (OSError, ValueError, AttributeError):
        return set()
    return {a for a in found if isinstance(a, str)} if isinstance(found, list) else set()
