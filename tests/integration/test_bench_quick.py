"""``scripts/bench --quick --no-write``: every sub-benchmark runs and reports, whether or not
LiteLLM is installed. (What it measures is kept in docs/benchmarks.md, not asserted here.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
NAMES = (
    "overhead", "throughput", "routing", "footprint", "batching", "load-freshness", "discovery",
    "queue",
    "constrained",
)  # fmt: skip


def test_the_quick_suite_reports_every_sub_benchmark() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench"), "--quick", "--no-write"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode in (0, 2), done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["failed"] == []
    results = report["results"]
    assert list(results) == list(NAMES)
    assert results["batching"]["skipped"] == "--quick: batching needs the default model"
    assert {"c1", "c32", "litellm", "checks"} <= set(results["overhead"])
    assert {"bare echo", "swarm"} <= set(results["throughput"]["peak_rps"])
    assert {"expected-wait", "round-robin", "random", "ideal"} <= set(results["routing"]["70%"])
    assert {"gateway", "node"} <= set(results["footprint"]["idle"])
    assert {"rise", "fall", "dht"} <= set(results["load-freshness"])
    assert {"routable_p99_s", "killed_out_max_s"} <= set(results["discovery"])
    assert results["queue"]["failed"] == 0, results["queue"]
    assert {"wait_s", "ideal_wait_s", "user_spread_s", "eta_error_s"} <= set(results["queue"])
    rows = results["constrained"]["rows"]
    assert [r["tokenizer"] for r in rows if r["engine"] == "xgrammar"] == ["tiny test model"]
    for name in ("overhead", "throughput", "routing"):
        litellm = results[name]["litellm"]
        assert litellm == "run" or litellm.startswith("not run: "), litellm
    missed = [c for r in results.values() for c in r.get("checks", []) if c["met"] is False]
    assert (done.returncode == 2) == bool(missed), missed
