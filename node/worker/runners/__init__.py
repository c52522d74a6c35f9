"""Model runners: text generation, image generation, and the torch-free echo model."""

from __future__ import annotations

from node.worker.runners.base import (
    Delta,
    GenerationCancelled,
    ImageRunner,
    ModelRunner,
    Progress,
    Runner,
    no_progress,
)
from node.worker.runners.echo import EchoRunner
from node.worker.runners.engine import EngineRunner, EngineSpec

__all__ = [
    "Delta",
    "EchoRunner",
    "EngineRunner",
    "EngineSpec",
    "GenerationCancelled",
    "ImageRunner",
    "ModelRunner",
    "Progress",
    "Runner",
    "no_progress",
]
