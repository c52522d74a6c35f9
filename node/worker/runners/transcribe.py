"""A speech-to-text runner for Whisper-family models on Hugging Face transformers.

One call hears one window of at most 30 s (the gateway cuts longer audio into windows and
passes the text heard so far as the next window's prompt). The language is detected first
when the caller does not name it, so the answer can say which it was. A stopping criterion
tied to the cancel flag ends decoding within a token of the caller going away.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from node.worker.runners.base import GenerationCancelled, Progress, drop_model
from protocols import ModelInfo, Segment, TranscribeParams, Transcript

logger = logging.getLogger(__name__)


class WhisperRunner:
    """One ``WhisperForConditionalGeneration`` and its processor, one call at a time."""

    def __init__(self, model_id: str, model: Any, processor: Any, dtype: str) -> None:
        self._model_id = model_id
        self._model: Any = model
        self._processor = processor
        self._dtype = dtype
        self._context = int(model.config.max_target_positions)
        self._busy = threading.Lock()

    @classmethod
    def load(
        cls, model_id: str, path: Path, device: str, dtype: str, progress: Progress
    ) -> WhisperRunner:
        import torch
        from transformers import AutoProcessor, WhisperForConditionalGeneration

        started = time.monotonic()
        progress(f"loading processor of {model_id}", 0.0)
        processor = AutoProcessor.from_pretrained(path)  # type: ignore[no-untyped-call]
        progress(f"loading weights of {model_id} ({dtype})", 0.2)
        model: Any = WhisperForConditionalGeneration.from_pretrained(
            path, dtype=getattr(torch, dtype)
        )
        model.to(device)
        model.eval()
        logger.info(
            "loaded %s on %s as %s in %.1f s", model_id, device, dtype, time.monotonic() - started
        )
        progress(f"{model_id} ready on {device}", 1.0)
        return cls(model_id, model, processor, dtype)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self._model_id, "speech-to-text", self._dtype, self._context, 1, "ready")

    def transcribe(self, params: TranscribeParams, cancelled: threading.Event) -> Transcript:
        import numpy as np
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Stop(StoppingCriteria):
            def __call__(self, ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((ids.shape[0],), cancelled.is_set(), dtype=torch.bool)

        audio = np.frombuffer(params.audio, dtype="<i2").astype(np.float32) / 32768.0
        extractor, tokenizer = self._processor.feature_extractor, self._processor.tokenizer
        rate = int(extractor.sampling_rate)
        if params.sample_rate != rate:
            import soxr

            audio = soxr.resample(audio, params.sample_rate, rate)
        with self._busy:
            model = self._model
            if model is None:
                raise RuntimeError(f"{self._model_id} is closed")
            features = extractor(audio, sampling_rate=rate, return_tensors="pt").input_features
            features = features.to(model.device, model.dtype)
            multilingual = self._multilingual()
            if not multilingual and params.task == "translate":
                raise ValueError(f"{self._model_id} hears English only: it cannot translate")
            with torch.inference_mode():
                language = (params.language or self._detect(features)) if multilingual else "en"
                prompt = self._prompt_ids(params.prompt)
                output = model.generate(
                    features,
                    task=params.task if multilingual else None,
                    language=language if multilingual else None,
                    return_timestamps=params.timestamps,
                    prompt_ids=prompt,
                    max_new_tokens=self._room(prompt),
                    do_sample=params.temperature > 0,
                    temperature=params.temperature if params.temperature > 0 else 1.0,
                    stopping_criteria=StoppingCriteriaList([_Stop()]),
                    return_dict_in_generate=True,
                )
        if cancelled.is_set():
            raise GenerationCancelled("cancelled while transcribing")
        tokens = self._generated(output["sequences"][0].tolist())
        segments: list[Segment] = []
        if params.timestamps:
            decoded = tokenizer.decode(tokens, output_offsets=True, skip_special_tokens=True)
            segments = [
                Segment(float(o["timestamp"][0]), float(o["timestamp"][1] or 0.0), o["text"])
                for o in decoded.get("offsets", [])
            ]
        return Transcript(
            text=tokenizer.decode(tokens, skip_special_tokens=True).strip(),
            language=language,
            segments=segments,
            prompt_tokens=0 if prompt is None else len(prompt),
            completion_tokens=len(tokens),
        )

    def _multilingual(self) -> bool:
        config = self._model.generation_config
        return bool(getattr(config, "is_multilingual", False) and getattr(config, "lang_to_id", {}))

    def _detect(self, features: Any) -> str:
        """The language code the model hears, such as ``"en"``."""
        token = self._processor.tokenizer.convert_ids_to_tokens(
            int(self._model.detect_language(features)[0])
        )
        return str(token).strip("<|>")

    def _prompt_ids(self, prompt: str) -> Any:
        """The prompt's tokens, its end kept where it is longer than Whisper reads."""
        if not prompt.strip():
            return None
        ids = self._processor.tokenizer.get_prompt_ids(prompt, return_tensors="pt")
        room = self._context // 2 - 1
        # The first token marks a prompt: keep it, and the prompt's last words.
        return ids if len(ids) <= room else ids[[0, *range(len(ids) - room + 1, len(ids))]]

    def _room(self, prompt: Any) -> int:
        """Tokens a window may write: half the decoder's positions, less what the prompt
        and the start tokens (start, language, task, no-timestamps) take beyond the rest."""
        taken = (0 if prompt is None else len(prompt)) + 4
        return max(1, min(self._context // 2, self._context - taken))

    def _generated(self, sequence: list[int]) -> list[int]:
        """The tokens the model wrote: without the prompt and the start tokens, which some
        generate paths return and others do not."""
        config = self._model.generation_config
        start = config.decoder_start_token_id
        prefix = {*getattr(config, "lang_to_id", {}).values()}
        prefix |= {*getattr(config, "task_to_id", {}).values()}
        prefix.add(getattr(config, "no_timestamps_token_id", -1))
        if sequence and sequence[0] == getattr(config, "prev_sot_token_id", -1):
            sequence = sequence[sequence.index(start) :] if start in sequence else []
        if sequence and sequence[0] == start:
            skip = 1
            while skip < min(4, len(sequence)) and sequence[skip] in prefix:
                skip += 1
            sequence = sequence[skip:]
        eos = config.eos_token_id
        return [t for t in sequence if t != eos]

    def close(self) -> None:
        drop_model(self, self._busy)
