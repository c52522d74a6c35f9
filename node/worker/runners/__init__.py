"""Model runners: text generation, image generation, and the torch-free echo model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    # The external-engine runner speaks HTTP (httpx): imported when first asked for, so a
    # worker that serves only local models (a bare GPU host) runs without httpx.
    if name in ("EngineRunner", "EngineSpec"):
        from node.worker.runners import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
