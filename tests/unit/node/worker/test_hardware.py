"""Hardware probing: the real CPU path here, and the GPU branches with only the GPU faked."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest
import torch

from node.worker.hardware import VRAM_TOTAL_ENV, device_for, probe, refresh_free
from protocols import Hardware
from tests.stand_in_directml import stand_in_directml

GiB = 1 << 30


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide any real accelerator, so a test sees only what it fakes."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setitem(sys.modules, "torch_directml", None)


def test_probe_reports_this_cpu(no_gpu: None) -> None:
    hw = probe()
    assert hw.backend == "cpu"
    assert hw.device_name and hw.device_name != "unknown cpu"
    assert hw.vram_total == psutil.virtual_memory().total
    assert 0 < hw.vram_free <= hw.vram_total
    assert device_for(hw.backend) == "cpu"


def test_refresh_free_rereads_memory(no_gpu: None) -> None:
    hw = Hardware("cpu", "some cpu", psutil.virtual_memory().total, 0)
    fresh = refresh_free(hw)
    assert fresh.backend == "cpu" and fresh.device_name == "some cpu"
    assert fresh.vram_total == hw.vram_total
    assert 0 < fresh.vram_free <= fresh.vram_total


def test_probe_without_torch_uses_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name == "torch" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` would now fail
    hw = probe()
    assert hw.backend == "cpu"
    assert hw.vram_total == psutil.virtual_memory().total


def test_probe_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    memory = {"free": 3 * GiB}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA Test 80GB")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (memory["free"], 8 * GiB))
    hw = probe()
    assert hw == Hardware("cuda", "NVIDIA Test 80GB", 8 * GiB, 3 * GiB)
    assert device_for("cuda") == "cuda"
    memory["free"] = 1 * GiB
    assert refresh_free(hw) == Hardware("cuda", "NVIDIA Test 80GB", 8 * GiB, 1 * GiB)


def test_probe_directml(no_gpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    used = [0.25, 0.25]
    monkeypatch.setitem(sys.modules, "torch_directml", stand_in_directml(used))
    monkeypatch.setenv(VRAM_TOTAL_ENV, str(8 * GiB))
    hw = probe()
    assert hw == Hardware("directml", "AMD Radeon Test", 8 * GiB, 6 * GiB)
    assert device_for("directml") == "privateuseone:0"
    used[:] = [0.5, 0.5]
    assert refresh_free(hw).vram_free == 4 * GiB


def test_probe_directml_without_total(no_gpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_directml", stand_in_directml([0.1]))
    monkeypatch.delenv(VRAM_TOTAL_ENV, raising=False)
    assert probe() == Hardware("directml", "AMD Radeon Test", 0, 0)
    monkeypatch.setenv(VRAM_TOTAL_ENV, "lots")
    assert probe().vram_total == 0


def test_probe_mps(no_gpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 16 * GiB, raising=False)
    monkeypatch.setattr(torch.mps, "current_allocated_memory", lambda: 2 * GiB, raising=False)
    hw = probe()
    assert (hw.backend, hw.vram_total, hw.vram_free) == ("mps", 16 * GiB, 14 * GiB)
    assert device_for("mps") == "mps"


def test_device_for_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        device_for("tpu")
