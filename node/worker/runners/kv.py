"""How much key/value cache a slot of a text model takes, and how many slots to give it.

A slot is budgeted a full-length cache: the model's context, up to ``SLOT_TOKENS``.
"""

from __future__ import annotations

from typing import Any

# Used when a config does not say how long a context the model was trained for.
FALLBACK_CONTEXT = 2048
# Default slots: each is budgeted this many tokens of key/value cache, and there are at
# most this many (past it, a bigger batch mostly adds latency on one device).
SLOT_TOKENS = 4096
MAX_SLOTS = 32


def kv_bytes_per_slot(config: Any, dtype_bytes: int) -> int:
    """The key/value cache of one full-length slot of a transformers ``config`` (an object
    with its attributes); 0 for a model that has none (not a decoder)."""
    heads = getattr(config, "num_attention_heads", None)
    layers = getattr(config, "num_hidden_layers", None)
    if not heads or not layers:
        return 0
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    context = int(getattr(config, "max_position_embeddings", None) or FALLBACK_CONTEXT)
    return 2 * int(layers) * int(kv_heads) * int(head_dim) * dtype_bytes * min(context, SLOT_TOKENS)


def default_slots(config: Any, dtype_bytes: int, free_bytes: int) -> int:
    """Generations to batch by default: as many full-length key/value caches as half the
    free memory holds, between 1 and ``MAX_SLOTS``."""
    per_slot = kv_bytes_per_slot(config, dtype_bytes)
    return int(max(1, min(MAX_SLOTS, free_bytes // 2 // max(1, per_slot))))
