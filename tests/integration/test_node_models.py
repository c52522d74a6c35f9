"""``bitinglip node load|unload`` against a real swarm: a model loaded into a running node
is routed to, one that does not fit is refused with the numbers, and an unloaded one
finishes its calls before it goes."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_swarm import chat, wait_nodes
from tests.tiny_models import build_tiny_llama

ROOT = Path(__file__).resolve().parent.parent.parent


def bitinglip(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


def models(url: str, token: str) -> dict[str, Any]:
    reply = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    return {m["id"]: m for m in reply.json()["data"]}


def wait_models(url: str, present: set[str], absent: set[str]) -> None:
    """Until the gateway can route to ``present`` and to none of ``absent``."""
    deadline = time.monotonic() + 30
    seen: set[str] = set()
    while time.monotonic() < deadline:
        seen = set(httpx.get(f"{url}/health", timeout=5).json()["models"])
        if present <= seen and not absent & seen:
            return
        time.sleep(0.1)
    raise AssertionError(f"the gateway lists {sorted(seen)}")


def huge_model(path: Path) -> Path:
    """A model whose weights file says it holds 2**40 float32 parameters (4 TiB).
    Only the header is written: admission reads nothing else."""
    path.mkdir(parents=True)
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 4 << 40]}}
    ).encode()
    (path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return path


def test_models_load_and_unload_at_runtime(swarm: LocalSwarmFixture, tmp_path: Path) -> None:
    swarm.start_node("node", [], ["echo", "echo-b"], ["--echo-delay", "0.05"])
    swarm.wait_ready(["node"])
    swarm.start_gateway(bootstrap=[swarm.addr("node")])
    url, token = swarm.url(), swarm.token()
    wait_nodes(url, 1)
    operator = ["--data-dir", str(swarm.data_dir), "--bootstrap", swarm.addr("node")]

    tiny = str(build_tiny_llama(tmp_path / "tiny"))
    loaded = bitinglip("node", "load", tiny, "--slots", "3", "--json", *operator)
    assert loaded.returncode == 0, loaded.stderr
    result = json.loads(loaded.stdout)
    assert result["peer"] == swarm.peer_id("node")
    assert result["model"] | {"id": tiny} == result["model"]
    assert (result["model"]["state"], result["model"]["max_batch"]) == ("ready", 3)
    wait_models(url, {"echo", tiny}, set())
    answer = chat(url, token, "hello", model=tiny, max_tokens=4)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] == 4

    again = bitinglip("node", "load", tiny, *operator)
    assert again.returncode == 1
    assert "already on every node" in again.stderr
    again = bitinglip("node", "load", tiny, "--peer", swarm.peer_id("node")[-6:], *operator)
    assert again.returncode == 1
    assert f"{tiny} is already ready on this node" in again.stderr

    big = bitinglip("node", "load", str(huge_model(tmp_path / "huge")), *operator)
    assert big.returncode == 3, big.stderr
    assert "does not fit: it needs 4.4 TiB (4.0 TiB weights" in big.stderr
    assert "of RAM free" in big.stderr or "free" in big.stderr

    # A call in hand when the unload starts runs to its end; then the model is gone.
    words = " ".join(f"w{i}" for i in range(200))  # 200 tokens of 0.05 s: 10 s
    answers: list[httpx.Response] = []
    caller = threading.Thread(target=lambda: answers.append(chat(url, token, words)))
    caller.start()
    time.sleep(0.8)
    gone = bitinglip("node", "unload", "echo", "--json", *operator)
    caller.join(30)
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout) | {"calls_drained": 1, "calls_cancelled": 0} == json.loads(
        gone.stdout
    )
    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json()["choices"][0]["message"]["content"] == words
    wait_models(url, {tiny}, {"echo"})
    assert chat(url, token, "anyone?").status_code == 404

    # Past its timeout, an unload cancels what still runs; the caller hears it at once.
    answers.clear()
    caller = threading.Thread(
        target=lambda: answers.append(chat(url, token, words, model="echo-b"))
    )
    caller.start()
    started = time.monotonic()
    time.sleep(0.8)
    cut = bitinglip("node", "unload", "echo-b", "--timeout", "0.2", "--json", *operator)
    caller.join(30)
    assert cut.returncode == 0, cut.stderr
    assert json.loads(cut.stdout)["calls_cancelled"] == 1
    assert answers[0].status_code == 503, answers[0].text
    assert time.monotonic() - started < 8  # not the 10 s the answer would have taken
    assert "unloaded" in answers[0].json()["error"]["message"]

    missing = bitinglip("node", "unload", "echo", *operator)
    assert missing.returncode == 2
    assert "echo: no node" in missing.stderr
