"""Hardware probing: the real CPU path here, and the GPU branches with only the GPU faked."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest
import torch

from node.worker import hardware
from node.worker.hardware import VRAM_TOTAL_ENV, device_for, probe, refresh_free
from protocols import Hardware
from tests.stand_in_directml import stand_in_directml

GiB = 1 << 30
TORCH = importlib.metadata.version("torch")
TRANSFORMERS = importlib.metadata.version("transformers")


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide any real accelerator, so a test sees only what it fakes."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setitem(sys.modules, "torch_directml", None)


def near_available(free: int) -> bool:
    """Within 5% of the host's memory of what psutil says is available now: other processes
    allocate and free between the two readings."""
    memory = psutil.virtual_memory()
    return abs(free - int(memory.available)) <= int(memory.total) // 20


def test_probe_reports_this_cpu_and_its_ram(no_gpu: None) -> None:
    hw = probe()
    assert hw.backend == "cpu" and hw.memory == "RAM"
    assert hw.device_name and hw.device_name != "unknown cpu"
    assert hw.memory_total == psutil.virtual_memory().total
    assert 0 < hw.memory_free <= hw.memory_total and near_available(hw.memory_free)
    assert (hw.torch, hw.transformers) == (TORCH, TRANSFORMERS)
    assert hw.compute_capability == ""
    assert device_for(hw.backend) == "cpu"


def test_refresh_free_rereads_memory_and_keeps_the_rest(no_gpu: None) -> None:
    hw = Hardware("cpu", "some cpu", "RAM", psutil.virtual_memory().total, 0, "2.5", "4.5")
    fresh = refresh_free(hw)
    assert fresh.backend == "cpu" and fresh.device_name == "some cpu" and fresh.memory == "RAM"
    assert (fresh.torch, fresh.transformers) == ("2.5", "4.5")
    assert fresh.memory_total == hw.memory_total
    assert 0 < fresh.memory_free <= fresh.memory_total and near_available(fresh.memory_free)


def test_versions_are_read_without_importing_transformers(
    no_gpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # any `import transformers` fails
    assert probe().transformers == TRANSFORMERS


def test_a_library_not_installed_has_no_version(
    no_gpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_version = importlib.metadata.version

    def version(name: str) -> str:
        if name == "transformers":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setitem(sys.modules, "transformers", None)
    hw = probe()
    assert (hw.torch, hw.transformers) == (TORCH, "")


def test_probe_without_torch_uses_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name == "torch" else real_find_spec(name, package)

    def version(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` would now fail
    hw = probe()
    assert (hw.backend, hw.memory, hw.torch, hw.transformers) == ("cpu", "RAM", "", "")
    assert hw.memory_total == psutil.virtual_memory().total


def test_probe_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    memory = {"free": 3 * GiB}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA Test 80GB")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (memory["free"], 8 * GiB))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 9))
    hw = probe()
    gpu = Hardware("cuda", "NVIDIA Test 80GB", "VRAM", 8 * GiB, 3 * GiB, TORCH, TRANSFORMERS, "8.9")
    assert hw == gpu
    assert device_for("cuda") == "cuda"
    memory["free"] = 1 * GiB
    assert refresh_free(hw) == replace(gpu, memory_free=1 * GiB)


def test_probe_directml(no_gpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    used = [0.25, 0.25]
    monkeypatch.setitem(sys.modules, "torch_directml", stand_in_directml(used))
    monkeypatch.setenv(VRAM_TOTAL_ENV, str(8 * GiB))
    hw = probe()
    assert hw == Hardware(
        "directml", "AMD Radeon Test", "VRAM", 8 * GiB, 6 * GiB, TORCH, TRANSFORMERS
    )
    assert device_for("directml") == "privateuseone:0"
    used[:] = [0.5, 0.5]
    assert refresh_free(hw).memory_free == 4 * GiB


def test_probe_directml_without_total(no_gpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_directml", stand_in_directml([0.1]))
    monkeypatch.delenv(VRAM_TOTAL_ENV, raising=False)
    assert probe() == Hardware("directml", "AMD Radeon Test", "VRAM", 0, 0, TORCH, TRANSFORMERS)
    monkeypatch.setenv(VRAM_TOTAL_ENV, "lots")
    assert probe().memory_total == 0


def test_probe_mps(no_gpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 16 * GiB, raising=False)
    monkeypatch.setattr(torch.mps, "current_allocated_memory", lambda: 2 * GiB, raising=False)
    hw = probe()
    assert (hw.backend, hw.memory, hw.memory_total, hw.memory_free) == (
        "mps",
        "unified",
        16 * GiB,
        14 * GiB,
    )
    assert hw.compute_capability == ""
    assert device_for("mps") == "mps"


def test_device_for_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        device_for("tpu")


def test_a_process_without_torch_probes_in_a_child_and_stays_lean(tmp_path: Path) -> None:
    script = (
        "import json, sys\n"
        "from node.worker.hardware import probe\n"
        "hw = probe()\n"
        "print(json.dumps([hw.backend, hw.memory_total, 'torch' in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    backend, total, imported = json.loads(out.stdout)
    assert (backend, total) == ("cpu", psutil.virtual_memory().total)
    assert imported is False  # the probe's torch stayed in the child


def test_a_failed_child_probe_falls_back_to_probing_here(
    no_gpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise subprocess.CalledProcessError(1, "python")

    monkeypatch.setattr(subprocess, "run", broken)
    monkeypatch.setattr(hardware, "torch_imported", lambda: False)
    assert probe().backend == "cpu"


def test_device_memory_is_read_again_only_once_torch_is_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hw = Hardware("cuda", "some gpu", "VRAM", 24 * GiB, 20 * GiB)
    monkeypatch.setattr(hardware, "torch_imported", lambda: False)
    assert refresh_free(hw) == hw  # no model here has imported torch: nothing to read
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (7 * GiB, 24 * GiB))
    assert refresh_free(hw, exact=True).memory_free == 7 * GiB
