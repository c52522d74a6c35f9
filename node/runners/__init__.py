"""Model runners, and how a model id becomes one."""

from __future__ import annotations

from pathlib import Path

from node.runners.base import Delta, Progress, Runner, no_progress
from node.runners.echo import EchoRunner

__all__ = ["Delta", "EchoRunner", "Progress", "Runner", "load_runner", "no_progress"]


def load_runner(
    model_id: str, data_dir: Path, backend: str, progress: Progress, echo_delay: float = 0.0
) -> Runner:
    """Load ``model_id``: ``echo`` (or ``echo-*``) needs no torch; anything else is a
    transformers causal LM resolved from a local path, the Hugging Face cache, or the
    bundled default model."""
    if model_id == "echo" or model_id.startswith("echo-"):
        return EchoRunner(model_id, delay=echo_delay)
    from node.hardware import device_for
    from node.models import resolve
    from node.runners.text import TextRunner

    path = resolve(model_id, data_dir, progress)
    return TextRunner.load(model_id, path, device_for(backend), None, 1, progress)
