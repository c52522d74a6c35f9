"""``bitinglip up``: a whole local swarm from one command, stopped cleanly by a signal."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]
import pytest


@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM])
def test_up_serves_then_stops_everything(tmp_path: Path, stop_with: signal.Signals) -> None:
    command = [sys.executable, "-m", "node.cli", "up", "--model", "echo", "--port", "0"]
    command += ["--nodes", "2", "--data-dir", str(tmp_path), "--json"]
    up = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert up.stdout is not None
        ready = json.loads(up.stdout.readline())
        assert ready["nodes"] == 2 and ready["model"] == "echo"
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) == 3  # one gateway, two nodes

        reply = httpx.post(
            f"{ready['url']}/v1/chat/completions",
            headers={"Authorization": f"Bearer {ready['token']}"},
            json={"model": "echo", "messages": [{"role": "user", "content": "hi there"}]},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == "hi there"

        up.send_signal(stop_with)
        assert up.wait(30) == 0
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"still running: {alive}"
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
