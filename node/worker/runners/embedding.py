"""Embedding models on Hugging Face transformers, read from sentence-transformers' layout.

A model saved by sentence-transformers is a chain of modules (``modules.json``): the
transformer, a pooling step (its ``config.json`` names the mode: the [CLS] token, the mean
or max over the tokens, or the last token) and often a normalisation. The runner reads that
chain and runs it with transformers itself, rather than through the sentence-transformers
package, which pins transformers 5 (a DirectML node needs 4) and brings scikit-learn and
SciPy for nothing a node uses. A chain with any other module (a Dense projection, say) is
refused at load time, never served with vectors it would not make.

Inputs are encoded first, so one too long for the model refuses the whole call before any
work; then they run longest-first in batches of similar length (little padding), one call
at a time per model, and stop between batches once the caller has gone away. ``dimensions``
keeps a vector's first values and normalises them again, which only a model trained for it
(Matryoshka) makes sense of: the node says which in its record, and refuses the others.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.worker.runners.base import Embedded, GenerationCancelled, Progress, drop_model
from protocols import EmbedParams, ModelInfo, Vectors
from protocols.embedding import FLOAT_BYTES

logger = logging.getLogger(__name__)

FALLBACK_CONTEXT = 512
POOLING_MODES = ("cls", "mean", "max", "lasttoken", "mean_sqrt_len")
# Padded tokens one forward pass may hold: bounds activation memory whatever the inputs.
BATCH_TOKENS = 16_384
# Vectors per answer chunk: a quarter of an RPC frame.
CHUNK_BYTES = 1 << 20
# A model card written by sentence-transformers names the loss it was trained with.
_MATRYOSHKA_MARKS = ("MatryoshkaLoss", "Matryoshka2dLoss", "matryoshka_dims")


class UnsupportedModel(ValueError):
    """The model's module chain holds a step this runner does not run."""


@dataclass(frozen=True)
class Layout:
    """What sentence-transformers' files say about running the model."""

    transformer: Path
    pooling: str
    normalize: bool
    max_seq_length: int | None
    lower_case: bool
    matryoshka: bool

    @classmethod
    def read(cls, path: Path) -> Layout:
        """The layout of the model saved at ``path``; ``UnsupportedModel`` where its module
        chain has anything but a transformer, a pooling step and a normalisation."""
        modules = _json(path / "modules.json")
        if not isinstance(modules, list) or not modules:
            raise UnsupportedModel(f"{path.name}: modules.json is not a list of modules")
        found: dict[str, Path] = {}
        for module in modules:
            kind = (
                str(module.get("type", "")).rsplit(".", 1)[-1] if isinstance(module, dict) else ""
            )
            if kind not in ("Transformer", "Pooling", "Normalize") or kind in found:
                raise UnsupportedModel(
                    f"{path.name}: its {kind or 'unnamed'} module is not supported (only a "
                    "transformer, one pooling step and a normalisation are)"
                )
            found[kind] = path / str(module.get("path", ""))
        if "Transformer" not in found or "Pooling" not in found:
            raise UnsupportedModel(f"{path.name}: modules.json lacks a transformer or a pooling")
        settings = _json(found["Transformer"] / "sentence_bert_config.json") or {}
        card = path / "README.md"
        text = card.read_text(errors="replace") if card.is_file() else ""
        max_seq = settings.get("max_seq_length") if isinstance(settings, dict) else None
        return cls(
            transformer=found["Transformer"],
            pooling=_pooling(_json(found["Pooling"] / "config.json"), path.name),
            normalize="Normalize" in found,
            max_seq_length=max_seq if isinstance(max_seq, int) and max_seq > 0 else None,
            lower_case=bool(isinstance(settings, dict) and settings.get("do_lower_case")),
            matryoshka=any(mark in text for mark in _MATRYOSHKA_MARKS),
        )


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pooling(config: Any, name: str) -> str:
    """The one pooling mode a Pooling module's config sets (old and new spellings)."""
    if not isinstance(config, dict):
        raise UnsupportedModel(f"{name}: its pooling module has no readable config.json")
    if isinstance(config.get("pooling_mode"), str):
        modes = [config["pooling_mode"]]
    else:
        modes = [m for m in POOLING_MODES if config.get(f"pooling_mode_{m}_token")]
        modes += [m for m in POOLING_MODES if config.get(f"pooling_mode_{m}_tokens")]
        modes += ["lasttoken"] if config.get("pooling_mode_lasttoken") else []
        modes += ["weightedmean"] if config.get("pooling_mode_weightedmean_tokens") else []
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise UnsupportedModel(
            f"{name}: pooling {'+'.join(modes) or 'none'} is not supported "
            f"(one of {', '.join(POOLING_MODES)} is)"
        )
    return str(modes[0])


class EmbeddingRunner:
    """One embedding model on one device."""

    def __init__(
        self, model_id: str, model: Any, tokenizer: Any, dtype: str, layout: Layout
    ) -> None:
        self._model_id = model_id
        self._model: Any = model
        self._tokenizer = tokenizer
        self._dtype = dtype
        self._layout = layout
        config = model.config
        positions = int(getattr(config, "max_position_embeddings", 0) or FALLBACK_CONTEXT)
        self._context = min(layout.max_seq_length or positions, positions)
        self._dimensions = int(config.hidden_size)
        self._vocab = int(config.vocab_size)
        pad = tokenizer.pad_token_id
        self._pad = int(pad) if pad is not None else 0
        self._busy = threading.Lock()

    @classmethod
    def load(
        cls, model_id: str, path: Path, device: str, dtype: str, progress: Progress
    ) -> EmbeddingRunner:
        import torch
        from transformers import AutoModel, AutoTokenizer

        started = time.monotonic()
        layout = Layout.read(path)
        progress(f"loading tokenizer of {model_id}", 0.0)
        tokenizer = AutoTokenizer.from_pretrained(layout.transformer)
        progress(f"loading weights of {model_id} ({dtype})", 0.2)
        model: Any = AutoModel.from_pretrained(layout.transformer, dtype=getattr(torch, dtype))
        model.to(device)
        model.eval()
        logger.info(
            "loaded %s (%s pooling) on %s as %s in %.1f s",
            model_id, layout.pooling, device, dtype, time.monotonic() - started,
        )  # fmt: skip
        progress(f"{model_id} ready on {device}", 1.0)
        return cls(model_id, model, tokenizer, dtype, layout)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            self._model_id,
            "embedding",
            self._dtype,
            self._context,
            1,
            "ready",
            dimensions=self._dimensions,
            matryoshka=self._layout.matryoshka,
        )

    def embed(self, params: EmbedParams, cancelled: threading.Event) -> Embedded:
        """A vector for each input, in order. ``ValueError`` (before any work) for an input
        the model cannot read or ``dimensions`` it cannot give; ``GenerationCancelled``
        once ``cancelled`` is set."""
        size = self._size(params.dimensions)
        inputs = self._encode(params)
        with self._busy:
            if self._model is None:
                raise RuntimeError(f"{self._model_id} is closed")
            rows = self._run(inputs, size, cancelled)
        per_chunk = max(1, CHUNK_BYTES // (size * FLOAT_BYTES))
        chunks = [
            Vectors(b"".join(rows[i : i + per_chunk]), len(rows[i : i + per_chunk]))
            for i in range(0, len(rows), per_chunk)
        ]
        return Embedded(chunks, sum(map(len, inputs)))

    def close(self) -> None:
        drop_model(self, self._busy)

    def _size(self, dimensions: int | None) -> int:
        if dimensions is None or dimensions == self._dimensions:
            return self._dimensions
        if not self._layout.matryoshka:
            raise ValueError(
                f"dimensions: {self._model_id} gives {self._dimensions}-dimensional vectors "
                "only (it was not trained to be cut shorter)"
            )
        if dimensions > self._dimensions:
            raise ValueError(
                f"dimensions: {self._model_id} gives at most {self._dimensions} dimensions"
            )
        return dimensions

    def _encode(self, params: EmbedParams) -> list[list[int]]:
        if params.tokens:
            inputs = params.tokens
            for i, ids in enumerate(inputs):
                if max(ids) >= self._vocab:
                    raise ValueError(
                        f"input[{i}] holds token id {max(ids)}, beyond {self._model_id}'s "
                        f"vocabulary of {self._vocab}"
                    )
        else:
            texts = [t.lower() for t in params.texts] if self._layout.lower_case else params.texts
            inputs = [list(ids) for ids in self._tokenizer(texts)["input_ids"]]
        for i, ids in enumerate(inputs):
            if len(ids) > self._context:
                raise ValueError(
                    f"input[{i}] is {len(ids)} tokens but {self._model_id} reads at most "
                    f"{self._context}"
                )
        return inputs

    def _run(self, inputs: list[list[int]], size: int, cancelled: threading.Event) -> list[bytes]:
        import torch

        order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i]))
        rows: list[bytes] = [b""] * len(inputs)
        start = 0
        while start < len(order):
            if cancelled.is_set():
                raise GenerationCancelled(f"{self._model_id}: the caller went away")
            longest = len(inputs[order[start]])
            batch = order[start : start + max(1, BATCH_TOKENS // longest)]
            start += len(batch)
            with torch.inference_mode():
                pooled = self._pooled([inputs[i] for i in batch], longest)
            if size < pooled.shape[1] or self._layout.normalize:
                pooled = torch.nn.functional.normalize(pooled[:, :size], dim=1)
            packed = pooled.to(torch.float32).cpu().numpy().astype("<f4")
            for i, vector in zip(batch, packed, strict=True):
                rows[i] = vector.tobytes()
        return rows

    def _pooled(self, batch: list[list[int]], longest: int) -> Any:
        """One forward pass over ``batch``, right-padded to ``longest``, pooled."""
        import torch

        device = self._model.device
        ids = torch.full((len(batch), longest), self._pad, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, tokens in enumerate(batch):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        ids, mask = ids.to(device), mask.to(device)
        hidden = self._model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        lengths = mask.sum(dim=1)
        mode = self._layout.pooling
        if mode == "cls":
            return hidden[:, 0]
        if mode == "lasttoken":
            return hidden[torch.arange(len(batch), device=device), lengths - 1]
        if mode == "max":
            return hidden.masked_fill(weights == 0, float("-inf")).max(dim=1).values
        summed = (hidden * weights).sum(dim=1)
        if mode == "mean_sqrt_len":
            return summed / lengths.unsqueeze(-1).to(hidden.dtype).sqrt()
        return summed / lengths.unsqueeze(-1).to(hidden.dtype)
