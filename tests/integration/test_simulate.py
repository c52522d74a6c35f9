"""``scripts/simulate`` on a small swarm: it converges, looks records up, measures the idle
cost, and sees killed nodes leave routing. (What it measures at scale is kept in
docs/benchmarks.md, not asserted here.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.timeout(600)
def test_a_small_simulated_swarm_converges_and_forgets_its_dead() -> None:
    command = [
        sys.executable, str(ROOT / "scripts" / "simulate"), "--peers", "7", "--gateways", "2",
        "--per-process", "1", "--join-rate", "20", "--idle-s", "2", "--json", "--no-write",
        # Records that live 20 s: the lookups wait 12 s for every first write, not 62 s.
        "--record-ttl", "20",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=580, cwd=ROOT)
    assert done.returncode in (0, 2), done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["nodes"] == 5 and result["node_processes"] == 5
    assert result["join_rate"] == 20 and result["record_ttl_s"] == 20
    assert result["least_routed_by_a_gateway"] == 5
    assert result["converged_from_start_s"] is not None
    assert result["join_cpu_s"] > 0
    assert result["node_processes_lost"] == 0
    assert result["killed"] == 1  # one process: at least a tenth
    assert result["killed_out_s"] is not None
    assert result["lookup_queries_mean"] is not None
    for kind in ("node", "gateway"):
        assert result["idle"][kind]["rss_mib_per_peer"] > 0
        assert result["idle"][kind]["tcp_bytes_out_per_peer_s"] >= 0
