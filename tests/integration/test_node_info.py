"""``python -m node info`` as a real process: what it prints is this host's truth, read
again here with psutil (or torch, on a CUDA host), and it needs no data dir, keys or network."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import torch

from gateway.client.peer_view import human_bytes

ROOT = Path(__file__).resolve().parent.parent.parent


def run_info(tmp_path: Path, *flags: str) -> str:
    # An empty home and no way to the Hub: the command must not need either.
    env = {
        **os.environ,
        "BITINGLIP_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "120",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-m", "node", "info", *flags],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "home").exists()
    return done.stdout


def this_host() -> tuple[str, str, int, int]:
    """(backend, memory kind, total, free) read independently of the probe."""
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info(0)
        return "cuda", "VRAM", total, free
    memory = psutil.virtual_memory()
    return "cpu", "RAM", int(memory.total), int(memory.available)


def test_json_tells_this_hosts_memory_and_versions(tmp_path: Path) -> None:
    body = json.loads(run_info(tmp_path, "--json"))
    backend, kind, total, free = this_host()
    assert (body["backend"], body["memory"], body["memory_total"]) == (backend, kind, total)
    # Other processes allocate between the two readings: within 5% of the whole.
    assert abs(body["memory_free"] - free) <= total // 20
    assert body["torch"] == importlib.metadata.version("torch")
    assert body["transformers"] == importlib.metadata.version("transformers")
    if backend == "cuda":
        assert body["compute_capability"] == "{}.{}".format(*torch.cuda.get_device_capability(0))
    else:
        assert body["compute_capability"] == ""
    assert isinstance(body["device_name"], str) and body["device_name"]


def test_the_table_for_people(tmp_path: Path) -> None:
    lines = [line.rstrip() for line in run_info(tmp_path).splitlines()]
    named = {line.split(maxsplit=1)[0]: line.split(maxsplit=1)[1] for line in lines}
    backend, kind, total, _ = this_host()
    assert named["backend"] == {"cuda": "CUDA", "cpu": "CPU"}[backend]
    assert named["memory"].startswith(f"{kind} ")
    assert named["memory"].endswith(f" free of {human_bytes(total)}")
    assert named["torch"] == importlib.metadata.version("torch")
    assert named["transformers"] == importlib.metadata.version("transformers")
    assert ("compute" in named) == (backend == "cuda")
