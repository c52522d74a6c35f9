"""How a model spec becomes a runner: resolved, checked against free memory, then loaded
on this peer's device."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from node.worker.memory import Estimate, estimate
from node.worker.runners import EchoRunner, ModelRunner, Progress
from protocols.operator import ModelSpec

# Called with the model's estimated needs (None: not known) before any weight is loaded;
# raises to refuse it.
Admit = Callable[[Estimate | None], None]

ECHO_SLOTS = 8


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
    resolved from a local path, the Hugging Face cache, or the bundled default model.
    A diffusers pipeline (it has a ``model_index.json``) becomes a text-to-image
    runner, anything else a transformers causal LM batching ``spec.slots`` generations
    (0: as many as ``free_memory`` holds key/value caches for, once it is loaded)."""
    if is_echo(spec.id):
        return EchoRunner(spec.id, delay=echo_delay, max_batch=spec.slots or ECHO_SLOTS)
    from node.worker.hardware import device_for
    from node.worker.models import resolve

    path = resolve(spec.id, data_dir, progress)
    device = spec.device or device_for(backend)
    if _is_pipeline(path):
        from node.worker.runners.image import DiffusersRunner

        admit(estimate(path, None, 0))
        return DiffusersRunner.load(spec.id, path, device, progress)
    from node.worker.runners.text import TextRunner, default_dtype

    dtype = spec.dtype or default_dtype(device)
    admit(estimate(path, dtype, spec.slots))
    return TextRunner.load(spec.id, path, device, dtype, spec.slots, progress, free_memory)


def is_echo(model_id: str) -> bool:
    return model_id == "echo" or model_id.startswith("echo-")


def task_of(model_id: str) -> str:
    """The task ``model_id`` will serve, as far as can be told before it is loaded
    (only a local directory shows that it holds a diffusers pipeline)."""
    local = Path(model_id).expanduser()
    return "text-to-image" if _is_pipeline(local) else "text-generation"


def _is_pipeline(path: Path) -> bool:
    return (path / "model_index.json").is_file()
