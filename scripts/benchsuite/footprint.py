"""Footprint: what an idle gateway and an idle node cost, and how long ``bitinglip up`` takes
to its first answer.

* Idle: a gateway and one echo node (no model weights), connected, doing nothing: resident
  memory (RSS) and CPU time over a window (psutil), as a percentage of one core. LiteLLM's
  idle proxy is shown beside them when it runs.
* Cold start: ``bitinglip up --nodes 1`` in a new process, timed from its start to the first
  chat answer through its gateway: from nothing (a fresh data directory: operator keys made,
  the default model converted from the bundled GGUF), then again on the same directory (the
  model already converted). ``--quick`` starts it once with the echo model instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.benchlib import header, machine
from scripts.benchsuite.outcome import Check, Context, Outcome, checks_table, litellm_cell

SECTION = "## Footprint"
TARGET_RSS_BYTES = 150_000_000
TARGET_COLD_S = 15.0


@dataclass(frozen=True)
class Idle:
    rss_bytes: int
    cpu_percent: float  # of one core


def idle(pids: dict[str, int], seconds: float) -> dict[str, Idle]:
    """RSS at the end and CPU over ``seconds`` of each process, sampled side by side."""
    import psutil  # type: ignore[import-untyped]

    procs = {name: psutil.Process(pid) for name, pid in pids.items()}

    def cpu(p: psutil.Process) -> float:
        times = p.cpu_times()
        return float(times.user + times.system)

    before = {name: cpu(p) for name, p in procs.items()}
    started = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - started
    return {
        name: Idle(p.memory_info().rss, (cpu(p) - before[name]) / wall * 100)
        for name, p in procs.items()
    }


def cold_up(data_dir: Path, model: str | None, timeout: float = 600) -> float:
    """Seconds from starting ``bitinglip up`` to its gateway's first chat answer."""
    import httpx

    command = [sys.executable, "-m", "node.cli", "up", "--nodes", "1", "--port", "0", "--json"]
    command += ["--data-dir", str(data_dir), *(["--model", model] if model else [])]
    log = data_dir.parent / f"{data_dir.name}-up.log"
    started = time.monotonic()
    with log.open("ab") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the ready line, once the gateway routes to the node
        if not line:
            raise RuntimeError(f"bitinglip up stopped before it was ready: see {log}")
        ready = json.loads(line)
        body = {"model": ready["model"], "messages": [{"role": "user", "content": "Hi"}]}
        body["max_tokens"] = 1
        answer = httpx.post(
            f"{ready['url']}/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {ready['token']}"},
            timeout=timeout,
        )
        answer.raise_for_status()
        return time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(ctx: Context) -> Outcome:
    host = machine()
    window = 2.0 if ctx.quick else 10.0
    swarm = ctx.fleet.swarm("swarm-idle", {"node": ["--model", "echo"]}, {"gateway": {}})
    time.sleep(0.5 if ctx.quick else 2.0)  # past start-up work: connections, first records
    pids = {name: proc.pid for name, proc in swarm.local.procs.items()}
    proxy = ctx.fleet.litellm
    if proxy is not None and proxy.start_s is not None and proxy.proc.poll() is None:
        pids["LiteLLM proxy"] = proxy.proc.pid
    print(f"footprint: idle for {window:g} s", file=sys.stderr)
    measured = idle(pids, window)
    ctx.fleet.drop(swarm)
    checks = [
        Check(
            f"idle {name} RSS ≤ {TARGET_RSS_BYTES / 1e6:.0f} MB",
            f"{measured[name].rss_bytes / 1e6:.0f} MB",
            measured[name].rss_bytes <= TARGET_RSS_BYTES,
        )
        for name in ("gateway", "node")
    ]
    starts = _cold_starts(ctx)
    for label, (seconds, target) in starts.items():
        if target:
            checks.append(
                Check(
                    f"{label} ≤ {TARGET_COLD_S:g} s", f"{seconds:.1f} s", seconds <= TARGET_COLD_S
                )
            )
    data: dict[str, Any] = {
        "idle": {
            name: {"rss_mb": round(m.rss_bytes / 1e6, 1), "cpu_percent": round(m.cpu_percent, 2)}
            for name, m in measured.items()
        },
        "idle_window_s": window,
        "cold_start_s": {label: round(s, 2) for label, (s, _) in starts.items()},
    }
    lines = header(SECTION, ctx.command, host)
    lines += [
        f"Idle: a gateway and one echo node (no model weights), connected, after start-up; "
        f"RSS at the end and CPU time over {window:g} s (psutil), in % of one core.",
        "",
        "| process | RSS (MB) | idle CPU (%) |",
        "|---|---:|---:|",
        *(
            f"| {name} | {m.rss_bytes / 1e6:.0f} | {m.cpu_percent:.2f} |"
            for name, m in measured.items()
        ),
    ]
    if "LiteLLM proxy" not in measured:
        lines.append(f"| LiteLLM proxy | {litellm_cell(ctx.fleet.litellm_reason)} | |")
    lines += [
        "",
        "Cold start: `bitinglip up --nodes 1` in a new process, to the first chat answer "
        "through its gateway (page cache warm: the files were read before).",
        "",
        "| start | seconds |",
        "|---|---:|",
        *(f"| {label} | {s:.1f} |" for label, (s, _) in starts.items()),
        "",
        *checks_table(checks),
    ]
    return Outcome(data, checks, "\n".join(lines) + "\n")


def _cold_starts(ctx: Context) -> dict[str, tuple[float, bool]]:
    """label -> (seconds, whether the cold-start target applies)."""
    starts: dict[str, tuple[float, bool]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-up-", dir=ctx.fleet.work) as tmp:
        data_dir = Path(tmp) / "data"
        env_before = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"  # the bundled model, never a download
        try:
            if ctx.quick:
                print("footprint: bitinglip up with the echo model", file=sys.stderr)
                starts["echo model, fresh data dir"] = (cold_up(data_dir, "echo"), False)
                return starts
            print("footprint: bitinglip up from nothing", file=sys.stderr)
            label = "default model, from nothing (fresh data dir, model converted)"
            starts[label] = (cold_up(data_dir, None), False)
            print("footprint: bitinglip up again, model converted", file=sys.stderr)
            label = "default model, already converted (same data dir again)"
            starts[label] = (cold_up(data_dir, None), True)
        finally:
            if env_before is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = env_before
    return starts
