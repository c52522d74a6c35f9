"""Several nodes in one process (``scripts/simworker.py``, as ``scripts/simulate`` runs
them): one SIGTERM stops every one of them, not only the last started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keys
from node.p2p.readiness import read_status
from scripts.simworker import peer_dir

ROOT = Path(__file__).resolve().parent.parent.parent
NODES = 3


def states(data: Path) -> list[str]:
    return [str(read_status(data / "run" / f"node-{i}.json").get("state")) for i in range(NODES)]


def test_one_sigterm_stops_every_node_of_the_process(tmp_path: Path) -> None:
    keys.init_operator(tmp_path)
    for i in range(NODES):
        keys.provision(peer_dir(tmp_path, f"node-{i}"), tmp_path, "node")
    absent = keys.provision(peer_dir(tmp_path, "absent"), tmp_path, "node")  # never runs
    command = [
        sys.executable, "-m", "scripts.simworker", "nodes", "--data", str(tmp_path),
        "--count", str(NODES), "--bootstrap", f"/ip4/127.0.0.1/tcp/9/p2p/{absent}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    worker = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while states(tmp_path) != ["ready"] * NODES:
            assert worker.poll() is None, worker.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, states(tmp_path)
            time.sleep(0.2)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
        assert states(tmp_path) == ["stopped"] * NODES
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
