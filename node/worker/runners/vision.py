"""Image-to-text runners on Hugging Face transformers: vision-language chat models and
captioning models, behind the same call.

- ``VisionChat`` serves a model whose processor has a chat template (LLaVA, Qwen2-VL,
  Idefics and kin): the conversation, pictures in place, goes through the template and the
  answer streams token by token.
- ``Captioner`` serves a captioning model (the BLIP family): it describes the last picture
  of the conversation; the text of the messages is not read.

Pictures arrive as PNG or JPEG that the gateway checked; they are opened again here with
the same caps, as any peer input is. One call runs at a time per model.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from node.worker.runners.base import Delta, Progress, drop_model
from protocols import ModelInfo, VisionParams
from protocols.vision import MAX_VISION_SIDE

logger = logging.getLogger(__name__)

FALLBACK_CONTEXT = 2048


def open_image(data: bytes) -> Any:
    """A PNG or JPEG as an RGB ``PIL.Image``; ``ValueError`` for anything else or for a
    picture larger than a call may carry."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as image:
            if max(image.size) > MAX_VISION_SIDE:
                raise ValueError(f"an image is larger than {MAX_VISION_SIDE} pixels on a side")
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"an image cannot be read: {exc}") from exc


class _Describer:
    """What both runners share: loading, one call at a time, the model's description."""

    def __init__(self, model_id: str, model: Any, processor: Any, dtype: str) -> None:
        self._model_id = model_id
        self._model: Any = model
        self._processor = processor
        self._dtype = dtype
        config = getattr(model.config, "text_config", None) or model.config
        self._context = int(getattr(config, "max_position_embeddings", 0) or FALLBACK_CONTEXT)
        self._busy = threading.Lock()

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self._model_id, "image-to-text", self._dtype, self._context, 1, "ready")

    def _stream(
        self,
        inputs: Any,
        params: VisionParams,
        cancelled: threading.Event,
        stop: threading.Event,
        counted: list[int],
    ) -> Iterator[str]:
        """Run ``generate`` on ``inputs`` in a thread of its own, yielding text as it comes;
        it stops at the next token once ``cancelled`` or ``stop`` is set, and counts its
        tokens in ``counted``."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        tokenizer = getattr(self._processor, "tokenizer", self._processor)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

        class _Stop(StoppingCriteria):
            def __call__(self, ids: Any, scores: Any, **kwargs: Any) -> Any:
                counted[0] += 1
                done = cancelled.is_set() or stop.is_set()
                return torch.full((ids.shape[0],), done, dtype=torch.bool)

        # Unset: the model's own generation config decides, as for text models.
        sampling: dict[str, Any] = {}
        if params.temperature is not None:
            sampling["do_sample"] = params.temperature > 0
            if params.temperature > 0:
                sampling["temperature"] = params.temperature
        if params.top_p is not None:
            sampling["top_p"] = params.top_p
        failures: list[Exception] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    if params.seed is not None:
                        torch.manual_seed(params.seed)
                    self._model.generate(
                        **inputs,
                        max_new_tokens=params.max_tokens,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_Stop()]),
                        **sampling,
                    )
            except Exception as exc:  # raised to the caller below, not lost in the thread
                failures.append(exc)
                streamer.end()  # type: ignore[no-untyped-call]

        worker = threading.Thread(target=run, name=f"describe {self._model_id}", daemon=True)
        worker.start()
        try:
            yield from streamer
        finally:
            stop.set()  # a caller that stopped reading stops the model too
            worker.join()
        if failures:
            raise failures[0]

    def _deltas(
        self, inputs: Any, params: VisionParams, cancelled: threading.Event
    ) -> Iterator[Delta]:
        """The answer as deltas, cut at the first stop sequence; the last delta carries the
        finish reason and the token counts."""
        prompt_tokens = int(inputs["input_ids"].shape[-1]) if "input_ids" in inputs else 0
        stop, counted = threading.Event(), [0]
        longest = max((len(s) for s in params.stop), default=0)
        held, finish = "", "length"
        for piece in self._stream(inputs, params, cancelled, stop, counted):
            held += piece
            found = [held.find(s) for s in params.stop if s in held]
            if found:
                held, finish = held[: min(found)], "stop"
                break
            # Kept back: what may be the start of a stop sequence.
            ready = len(held) - max(0, longest - 1)
            if ready > 0:
                yield Delta(held[:ready], prompt_tokens, counted[0])
                held = held[ready:]
        else:
            if counted[0] < params.max_tokens:
                finish = "stop"
        stop.set()
        yield Delta(held, prompt_tokens, counted[0], finish)

    def close(self) -> None:
        drop_model(self, self._busy)


class VisionChat(_Describer):
    """A vision-language model whose processor has a chat template."""

    def describe(self, params: VisionParams, cancelled: threading.Event) -> Iterator[Delta]:
        images = [open_image(i) for i in params.images]
        conversation = [
            {
                "role": m.role,
                "content": [
                    {"type": "text", "text": p} if isinstance(p, str) else {"type": "image"}
                    for p in m.content
                ],
            }
            for m in params.messages
        ]
        with self._busy:
            if self._model is None:
                raise RuntimeError(f"{self._model_id} is closed")
            prompt = self._processor.apply_chat_template(conversation, add_generation_prompt=True)
            inputs = self._processor(images=images or None, text=prompt, return_tensors="pt")
            inputs = inputs.to(self._model.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
            yield from self._deltas(inputs, params, cancelled)


class Captioner(_Describer):
    """A captioning model: a description of the conversation's last picture."""

    def describe(self, params: VisionParams, cancelled: threading.Event) -> Iterator[Delta]:
        if not params.images:
            raise ValueError(f"{self._model_id} describes pictures: send one with the message")
        image = open_image(params.images[-1])
        with self._busy:
            if self._model is None:
                raise RuntimeError(f"{self._model_id} is closed")
            inputs = self._processor(images=image, return_tensors="pt").to(self._model.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
            yield from self._deltas(inputs, params, cancelled)


def load_vision(
    model_id: str, path: Path, device: str, dtype: str, progress: Progress
) -> VisionChat | Captioner:
    """Load the image-to-text model at ``path``: a chat runner where its processor has a
    chat template, else a captioner."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    started = time.monotonic()
    progress(f"loading processor of {model_id}", 0.0)
    processor = AutoProcessor.from_pretrained(path)  # type: ignore[no-untyped-call]
    progress(f"loading weights of {model_id} ({dtype})", 0.2)
    model: Any = AutoModelForImageTextToText.from_pretrained(path, dtype=getattr(torch, dtype))
    model.to(device)
    model.eval()
    chat = bool(getattr(processor, "chat_template", None))
    logger.info(
        "loaded %s (%s) on %s as %s in %.1f s",
        model_id, "chat" if chat else "captions", device, dtype, time.monotonic() - started,
    )  # fmt: skip
    progress(f"{model_id} ready on {device}", 1.0)
    kind = VisionChat if chat else Captioner
    return kind(model_id, model, processor, dtype)
