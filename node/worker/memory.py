"""Whether a model fits this node's memory, told before a single weight is loaded.

The estimate adds three parts, each read from files alone (no torch):

- weights: the parameters in the safetensors headers, at the bytes per parameter of the
  dtype the model will run in (or as stored, where the dtype is not known);
- key/value cache: its slots times the cache one slot needs (``runners.kv``), from
  ``config.json``;
- working memory: ``WORKING_SHARE`` of the weights for activations and allocator slack.

A model is admitted when the estimate fits the memory the device has free, less what
models still loading have already been promised.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.worker.model_store import model_footprint
from node.worker.runners.kv import kv_bytes_per_slot

logger = logging.getLogger(__name__)

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
WORKING_SHARE = 0.1

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


class NotEnoughMemory(Exception):
    """The model would not fit: the message names the numbers."""


@dataclass(frozen=True)
class Estimate:
    weights: int
    kv_cache: int
    working: int
    slots: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.working

    def describe(self) -> str:
        return (
            f"{human(self.total)} ({human(self.weights)} weights + {human(self.kv_cache)} "
            f"key/value cache for {self.slots} slot{'' if self.slots == 1 else 's'} + "
            f"{human(self.working)} working memory)"
        )


def estimate(path: Path, dtype: str | None, slots: int) -> Estimate | None:
    """What the model stored at ``path`` needs with ``slots`` slots (0: budgeted as one,
    the least it can run with); None when its weights are not in safetensors files."""
    footprint = model_footprint(path)
    if footprint is None:
        return None
    per_parameter = DTYPE_BYTES.get(dtype or "")
    weights = footprint.parameters * per_parameter if per_parameter else footprint.bytes
    config = _config(path / "config.json")
    per_slot = 0 if config is None else kv_bytes_per_slot(config, per_parameter or 2)
    slots = max(1, slots)
    return Estimate(weights, per_slot * slots, int(weights * WORKING_SHARE), slots)


def admit(model: str, needs: Estimate, free: int, memory: str) -> None:
    """Raise ``NotEnoughMemory`` unless ``needs`` fits in ``free`` bytes of ``memory``."""
    if needs.total > free:
        raise NotEnoughMemory(
            f"{model} does not fit: it needs {needs.describe()}, and this node has "
            f"{human(free)} of {memory} free"
        )


def human(n: int) -> str:
    value, unit = float(max(0, n)), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{n} B" if unit == 0 else f"{value:.1f} {_UNITS[unit]}"


class _Config:
    """A ``config.json`` read as attributes, as transformers configs are."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _config(file: Path) -> _Config | None:
    try:
        values = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(values, dict):
        return None
    # Multimodal configs keep the language model's shape in a sub-config.
    text = values.get("text_config")
    return _Config(text if isinstance(text, dict) else values)
