"""A text-to-image runner on Hugging Face diffusers.

It serves any pipeline that ``DiffusionPipeline.from_pretrained`` loads from a directory
holding a ``model_index.json`` (Stable Diffusion and its kin), one generation at a time.

Noise comes from a per-request ``torch.Generator`` on the CPU rather than the global RNG,
so a seeded request gives the same images again even while other models run in other
threads, and every backend can seed it. A ``callback_on_step_end`` reports each denoising
step and checks the cancel flag, so a caller that goes away stops the work within one step.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from pathlib import Path
from typing import Any

from node.worker.runners.base import (
    GenerationCancelled,
    Progress,
    Steps,
    free_device_memory,
    no_steps,
)
from protocols import ImageParams, ModelInfo

logger = logging.getLogger(__name__)

# Prompt tokens the CLIP text encoder of Stable Diffusion reads; the rest is cut off.
CONTEXT_LENGTH = 77


class DiffusersRunner:
    """One diffusers text-to-image pipeline loaded on one device."""

    def __init__(self, model_id: str, pipeline: Any, dtype: str) -> None:
        self._model_id = model_id
        self._pipeline: Any = pipeline
        self._dtype = dtype
        # A pipeline's scheduler keeps per-call state: never run two calls at once.
        self._busy = threading.Lock()

    @classmethod
    def load(cls, model_id: str, path: Path, device: str, progress: Progress) -> DiffusersRunner:
        """Load the pipeline stored at ``path`` onto ``device``: float32 on the CPU,
        float16 on GPUs."""
        import torch
        from diffusers import DiffusionPipeline

        started = time.monotonic()
        dtype = "float32" if device == "cpu" else "float16"
        progress(f"loading pipeline of {model_id} ({dtype})", 0.0)
        # torch_dtype rather than dtype: the only spelling every supported diffusers accepts.
        pipeline: Any = DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
            path, torch_dtype=getattr(torch, dtype)
        )
        progress(f"moving {model_id} to {device}", 0.8)
        pipeline.to(device)
        pipeline.set_progress_bar_config(disable=True)
        logger.info(
            "loaded %s on %s as %s in %.1f s", model_id, device, dtype, time.monotonic() - started
        )
        progress(f"{model_id} ready on {device}", 1.0)
        return cls(model_id, pipeline, dtype)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self._model_id, "text-to-image", self._dtype, CONTEXT_LENGTH, 1, "ready")

    def generate_images(
        self, params: ImageParams, cancelled: threading.Event, steps: Steps = no_steps
    ) -> list[bytes]:
        """Generate ``params.n`` images from ``params.prompt``, each as PNG bytes, calling
        ``steps(step, of)`` after every denoising step.

        Raises ``GenerationCancelled`` as soon as ``cancelled`` is set (checked before
        the first step and after every step).
        """
        import torch

        def check(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> Any:
            # The scheduler's own count: some take more steps than were asked for.
            total = max(int(getattr(pipeline, "num_timesteps", 0) or 0), params.steps, step + 1)
            if cancelled.is_set():
                raise GenerationCancelled(f"cancelled after {step + 1} of {total} steps")
            steps(step + 1, total)
            return tensors

        with self._busy:
            pipeline = self._pipeline
            if pipeline is None:
                raise RuntimeError(f"{self._model_id} is closed")
            if cancelled.is_set():
                raise GenerationCancelled("cancelled before the first step")
            generator = torch.Generator(device="cpu")
            if params.seed is None:
                generator.seed()
            else:
                generator.manual_seed(params.seed)
            result = pipeline(
                prompt=params.prompt,
                negative_prompt=params.negative_prompt or None,
                num_images_per_prompt=params.n,
                width=params.width,
                height=params.height,
                num_inference_steps=params.steps,
                guidance_scale=params.guidance,
                generator=generator,
                output_type="pil",
                callback_on_step_end=check,
            )
        return [_png(image) for image in result.images]

    def close(self) -> None:
        """Drop the pipeline so its memory can be reused; later calls fail.

        Waits for a running generation to end (cancel it first to make that quick).
        """
        with self._busy:
            pipeline, self._pipeline = self._pipeline, None
        if pipeline is None:
            return
        device = str(pipeline.device)
        del pipeline
        free_device_memory(device)


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
