"""``scripts/bench_gpu --device cpu --tiny``: the GPU benchmark runs to the end on a host that
has only what a bare GPU machine has, and base58 (no trio, libp2p, jwt, hypercorn, fastapi,
xgrammar, diffusers, cryptography, httpx or gguf), and reports every figure. Speeds are not
asserted: they mean little on a CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
ABSENT = (
    "trio", "libp2p", "jwt", "hypercorn", "fastapi", "xgrammar", "diffusers", "cryptography",
    "httpx", "gguf",
)  # fmt: skip
# Loaded at start-up by every Python process with this directory on PYTHONPATH (the node's
# hardware probe runs in a child process too).
BLOCKER = f"""
import sys
from importlib.abc import MetaPathFinder

class _Absent(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {ABSENT!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None

sys.meta_path.insert(0, _Absent())
"""
ENGINE_FIELDS = {
    "requests", "tokens", "seconds", "tokens_per_s", "per_request_tokens_per_s",
    "ttft_p50_ms", "ttft_p99_ms", "speedup",
}  # fmt: skip
MEASURED = {"torch_allocated", "torch_max_allocated", "torch_reserved", "nvml_used", "process_rss"}


def test_the_gpu_benchmark_runs_without_the_networking_packages(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    env = os.environ | {"PYTHONPATH": str(blocker), "HF_HUB_OFFLINE": "1"}
    check = subprocess.run([sys.executable, "-c", "import trio"], env=env, capture_output=True)
    assert b"blocked" in check.stderr, "the import blocker does not work"

    out = tmp_path / "out"
    script = str(ROOT / "scripts" / "bench_gpu")
    done = subprocess.run(
        [sys.executable, script, "--device", "cpu", "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "gpu.json").read_text())
    about = {"date", "command", "machine", "versions", "hardware", "model", "settings", "seconds"}
    assert about <= set(result)
    assert result["hardware"]["backend"] == "cpu" and result["hardware"]["memory_total"] > 0
    levels = ["1", "8", "32", "64"]
    assert list(result["engine"]) == levels
    for row in [*result["engine"].values(), result["sequential"]]:
        assert set(row) == ENGINE_FIELDS
        # The end-of-text token is unreachable: every request makes all its tokens.
        assert row["tokens"] == row["requests"] * result["settings"]["new_tokens"]
    for way in ("hf_padded", "hf_continuous"):
        assert list(result[way]) == levels, result[way]
        assert all(r["tokens"] == r["requests"] * 32 for r in result[way].values())
    memory = result["memory"]
    assert {"weights", "kv_cache", "working", "slots", "total", "free"} <= set(memory["estimate"])
    assert memory["estimate"]["slots"] == memory["advertised"]["max_batch"] == 64
    assert memory["advertised"]["memory_free"] > 0 and memory["default_slots"] >= 1
    for when in ("before_load", "after_load", "peak"):
        assert set(memory[when]) >= MEASURED
    assert memory["peak"]["requests"] == 64 and "nvml_used_peak" in memory["peak"]
    assert 0 <= result["same_answers"] <= result["settings"]["sequential_requests"]
    text = (out / "gpu.md").read_text()
    assert text.startswith("## GPU\n") and "| 64 |" in text


def test_without_cuda_it_says_so_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_gpu"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=os.environ | {"CUDA_VISIBLE_DEVICES": ""},  # no GPU, whatever this host has
    )
    assert done.returncode == 1
    assert "CUDA is not available" in done.stderr and "--device cpu --tiny" in done.stderr
    assert not out.exists()
