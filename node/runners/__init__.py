"""Model runners, and how a model id becomes one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from node.runners.base import (
    Delta,
    GenerationCancelled,
    ImageRunner,
    ModelRunner,
    Progress,
    Runner,
    no_progress,
)
from node.runners.echo import EchoRunner
from node.runners.engine import EngineRunner

__all__ = [
    "Delta",
    "EchoRunner",
    "EngineRunner",
    "GenerationCancelled",
    "ImageRunner",
    "ModelRunner",
    "Progress",
    "Runner",
    "load_runner",
    "no_progress",
    "task_of",
]


def load_runner(
    model_id: str,
    data_dir: Path,
    backend: str,
    progress: Progress,
    echo_delay: float = 0.0,
    slots: int = 0,
    free_memory: Callable[[], int] | None = None,
) -> ModelRunner:
    """Load ``model_id``: ``echo`` (or ``echo-*``) needs no torch; anything else is
    resolved from a local path, the Hugging Face cache, or the bundled default model.
    A diffusers pipeline (it has a ``model_index.json``) becomes a text-to-image
    runner, anything else a transformers causal LM batching ``slots`` generations
    (0: as many as ``free_memory`` holds key/value caches for, once it is loaded)."""
    if model_id == "echo" or model_id.startswith("echo-"):
        return EchoRunner(model_id, delay=echo_delay)
    from node.hardware import device_for
    from node.models import resolve

    path = resolve(model_id, data_dir, progress)
    device = device_for(backend)
    if _is_pipeline(path):
        from node.runners.image import DiffusersRunner

        return DiffusersRunner.load(model_id, path, device, progress)
    from node.runners.text import TextRunner

    return TextRunner.load(model_id, path, device, None, slots, progress, free_memory)


def task_of(model_id: str) -> str:
    """The task ``model_id`` will serve, as far as can be told before it is loaded
    (only a local directory shows that it holds a diffusers pipeline)."""
    local = Path(model_id).expanduser()
    return "text-to-image" if _is_pipeline(local) else "text-generation"


def _is_pipeline(path: Path) -> bool:
    return (path / "model_index.json").is_file()
