"""``bitinglip node info`` in-process: the rows people read for each kind of host, and the
JSON a script reads, which is the probe's record verbatim."""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest
import torch
from rich.console import Console

import node.cli.info
from node.cli.info import rows, table
from node.cli.main import main
from protocols import Hardware

GiB = 1 << 30


def shown(hardware: Hardware) -> list[list[str]]:
    console = Console(record=True, width=120, color_system=None)
    console.print(table(hardware))
    return [line.rstrip().split(maxsplit=1) for line in console.export_text().splitlines()]


def test_a_cuda_gpu_shows_vram_and_its_compute_capability() -> None:
    gpu = Hardware("cuda", "NVIDIA RTX 4090", "VRAM", 24 * GiB, 20 * GiB, "2.5.1", "4.57.0", "8.9")
    assert rows(gpu) == [
        ("backend", "CUDA"),
        ("device", "NVIDIA RTX 4090"),
        ("memory", "VRAM 20.0 GiB free of 24.0 GiB"),
        ("torch", "2.5.1"),
        ("transformers", "4.57.0"),
        ("compute capability", "8.9"),
    ]


def test_a_cpu_host_shows_ram_and_no_compute_capability() -> None:
    cpu = Hardware("cpu", "AMD EPYC [7B13]", "RAM", 64 * GiB, 48 * GiB, "2.5.1", "")
    assert [line[0] for line in shown(cpu)] == [
        "backend", "device", "memory", "torch", "transformers",
    ]  # fmt: skip
    assert shown(cpu)[:3] == [
        ["backend", "CPU"],
        ["device", "AMD EPYC [7B13]"],  # brackets are text, not markup
        ["memory", "RAM 48.0 GiB free of 64.0 GiB"],
    ]
    assert dict(rows(cpu))["transformers"] == "not installed"


@pytest.mark.parametrize(
    ("hardware", "memory"),
    [
        (Hardware("directml", "AMD Radeon", "VRAM", 0, 0), "VRAM, size unknown (set "),
        (Hardware("mps", "Apple M3", "unified", 16 * GiB, 8 * GiB), "unified 8.0 GiB free of"),
    ],
)
def test_other_backends_name_their_memory(hardware: Hardware, memory: str) -> None:
    assert dict(rows(hardware))["backend"] in ("DirectML", "MPS")
    assert dict(rows(hardware))["memory"].startswith(memory)


def test_json_is_the_probe_of_this_host(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Whatever accelerator the test host has, this test checks the CPU path against psutil.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setitem(sys.modules, "torch_directml", None)
    assert main(["node", "info", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    memory = psutil.virtual_memory()
    assert body["backend"] == "cpu" and body["memory"] == "RAM"
    assert body["memory_total"] == memory.total
    assert abs(body["memory_free"] - memory.available) <= memory.total // 20
    assert body["torch"] == importlib.metadata.version("torch")
    assert body["transformers"] == importlib.metadata.version("transformers")
    assert body["compute_capability"] == ""


def test_the_table_for_people_needs_no_data_dir(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    gpu = Hardware("cuda", "NVIDIA H100", "VRAM", 80 * GiB, 79 * GiB, "2.5.1", "4.57.0", "9.0")
    monkeypatch.setattr(node.cli.info, "probe", lambda: gpu)
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("BITINGLIP_HOME", str(tmp_path / "home"))
    assert main(["node", "info"]) == 0
    out = capsys.readouterr().out
    assert "VRAM 79.0 GiB free of 80.0 GiB" in out and "compute capability  9.0" in out
    assert not (tmp_path / "home").exists()
