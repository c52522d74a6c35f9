"""Memory admission: a model's needs read from its files, and a refusal with the numbers."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from node.worker.memory import (
    NotEnoughMemory,
    admit,
    estimate,
    human,
)
from node.worker.model_store import model_footprint
from node.worker.runners.kv import SLOT_TOKENS
from tests.tiny_models import CONTEXT_LENGTH, build_tiny_llama

GIB = 1 << 30


def write_header_only(path: Path, shape: list[int], dtype: str = "BF16") -> None:
    path.mkdir(parents=True, exist_ok=True)
    header = json.dumps({"w": {"dtype": dtype, "shape": shape, "data_offsets": [0, 0]}}).encode()
    (path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("memory") / "tiny")


def test_a_text_model_needs_its_weights_at_the_run_dtype_plus_its_slots(tiny: Path) -> None:
    footprint = model_footprint(tiny)
    assert footprint is not None
    # 2 layers x 2 key/value heads x head size 16 x (key + value), a token, per byte of dtype
    per_slot = 2 * 2 * 2 * 16 * min(CONTEXT_LENGTH, SLOT_TOKENS)
    needs = estimate(tiny, "float32", 3)
    assert needs is not None
    assert needs.weights == footprint.parameters * 4
    assert needs.kv_cache == 3 * per_slot * 4
    assert needs.working == needs.weights // 10
    assert needs.total == needs.weights + needs.kv_cache + needs.working
    half = estimate(tiny, "bfloat16", 0)  # automatic slots are budgeted as one
    assert half is not None
    assert (half.weights, half.kv_cache, half.slots) == (footprint.parameters * 2, per_slot * 2, 1)


def test_without_a_known_dtype_the_weights_count_as_stored(tmp_path: Path) -> None:
    write_header_only(tmp_path / "m", [1024, 1024], "F16")
    needs = estimate(tmp_path / "m", None, 1)
    assert needs is not None
    assert (needs.weights, needs.kv_cache) == (2 << 20, 0)  # no config: no cache to budget


def test_a_multimodal_config_is_sized_by_its_language_model(tmp_path: Path) -> None:
    write_header_only(tmp_path / "vlm", [8])
    text = {"num_hidden_layers": 4, "num_attention_heads": 8, "hidden_size": 64}
    (tmp_path / "vlm" / "config.json").write_text(json.dumps({"text_config": text}))
    needs = estimate(tmp_path / "vlm", "float16", 2)
    assert needs is not None
    assert needs.kv_cache == 2 * (2 * 4 * 8 * 8 * 2 * 2048)


def test_a_model_without_safetensors_cannot_be_estimated(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"\0")
    assert estimate(tmp_path / "bin", "float32", 1) is None


def test_a_model_that_does_not_fit_is_refused_with_the_numbers(tmp_path: Path) -> None:
    write_header_only(tmp_path / "big", [4, GIB])  # 4 Gi parameters
    (tmp_path / "big" / "config.json").write_text(
        json.dumps({"num_hidden_layers": 32, "num_attention_heads": 32, "hidden_size": 4096})
    )
    needs = estimate(tmp_path / "big", "bfloat16", 4)
    assert needs is not None
    admit("big", needs, needs.total, "VRAM")  # exactly enough is enough
    with pytest.raises(NotEnoughMemory) as caught:
        admit("big", needs, needs.total - 1, "VRAM")
    assert str(caught.value) == (
        "big does not fit: it needs 12.8 GiB (8.0 GiB weights + 4.0 GiB key/value cache for "
        f"4 slots + 819.2 MiB working memory), and this node has {human(needs.total - 1)} "
        "of VRAM free"
    )


def test_sizes_read_as_people_write_them() -> None:
    assert [human(n) for n in (0, 1023, 1024, 1536 << 20, 3 << 40)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 GiB",
        "3.0 TiB",
    ]
