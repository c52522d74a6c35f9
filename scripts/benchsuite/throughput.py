"""Throughput: answered chat calls per second through one gateway with three echo nodes,
against one bare echo server and LiteLLM's proxy over three, as client concurrency grows.

The client keeps its own cores (``loadgen.split_cores``) and every server process is moved
onto the others, so each target gets the same core budget and the client never competes
with it. Each point is a closed loop: C keep-alive connections, each sending its next call
when the last is answered, counted over a fixed time after a warm-up.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from scripts.benchlib import Stats, Swarm, header, machine
from scripts.benchsuite import litellm_proxy, plots
from scripts.benchsuite.loadgen import Run, closed_loop, pinned_here
from scripts.benchsuite.outcome import Check, Context, Outcome, checks_table, litellm_cell
from scripts.benchsuite.overhead import PROMPT, targets

SECTION = "## Throughput"
PLOT = "throughput.png"
LEVELS = (1, 4, 16, 64, 256)
QUICK_LEVELS = (16,)
TARGET_OF_BARE = 0.5
TARGET_OVER_LITELLM = 5.0


def run(ctx: Context, swarm: Swarm) -> Outcome:
    host = machine()
    levels = QUICK_LEVELS if ctx.quick else LEVELS
    seconds, warm_s = (1.0, 0.3) if ctx.quick else (3.0, 0.5)
    chosen = targets(ctx, swarm)
    ctx.fleet.pin(ctx.server_cores)
    runs: dict[str, dict[int, Run]] = {t.name: {} for t in chosen}
    with pinned_here(ctx.client_cores):
        for level in levels:
            for target in chosen:
                print(f"throughput: {target.name} at concurrency {level}", file=sys.stderr)
                runs[target.name][level] = asyncio.run(
                    closed_loop(target, PROMPT, level, seconds, warm_s)
                )
    peak = {name: max(r.rate for r in by.values()) for name, by in runs.items()}
    checks = _checks(peak, ctx.fleet.litellm_reason)
    data: dict[str, Any] = {
        name: {
            str(level): {"rps": round(r.rate, 1), "errors": r.errors}
            | ({"first_error": r.first_error} if r.errors else {})
            | (Stats.of(r.latencies).rounded() if r.latencies else {})
            for level, r in by.items()
        }
        for name, by in runs.items()
    }
    data["peak_rps"] = {name: round(rate, 1) for name, rate in peak.items()}
    data["litellm"] = "run" if "LiteLLM" in runs else litellm_cell(ctx.fleet.litellm_reason)
    data["cores"] = ctx.cores()
    figure = plots.throughput(
        ctx.plots / PLOT,
        list(levels),
        {name: [by[level].rate for level in levels] for name, by in runs.items()},
    )
    lines = header(SECTION, ctx.command, host, _litellm_version(runs))
    lines += [
        "The same three targets as the overhead above (bare echo: one echo server; swarm: one "
        "gateway, three echo nodes; LiteLLM: its proxy, one worker, over three echo servers). "
        f"{ctx.cores()} (`os.sched_setaffinity`). Each cell: C keep-alive connections calling "
        f"back to back for {seconds:g} s after {warm_s:g} s of warm-up; answered calls per "
        "second, then p50 / p99 latency in ms.",
        "",
        "| concurrency | " + " | ".join(runs) + " |",
        "|---:|" + "---:|" * len(runs),
    ]
    for level in levels:
        cells = [_cell(by[level]) for by in runs.values()]
        lines.append(f"| {level} | " + " | ".join(cells) + " |")
    if "LiteLLM" not in runs:
        lines += ["", f"LiteLLM: {litellm_cell(ctx.fleet.litellm_reason)}."]
    lines += ["", *checks_table(checks), "", f"![throughput against concurrency](plots/{PLOT})"]
    return Outcome(data, checks, "\n".join(lines) + "\n", [figure])


def _cell(run: Run) -> str:
    if not run.latencies:
        return f"0 ({run.errors} errors: {run.first_error})" if run.errors else "0"
    stats = Stats.of(run.latencies)
    errors = f", {run.errors} errors" if run.errors else ""
    return f"{run.rate:.0f} ({stats.p50:.1f} / {stats.p99:.1f}{errors})"


def _checks(peak: dict[str, float], litellm_reason: str) -> list[Check]:
    swarm, bare = peak["swarm"], peak["bare echo"]
    checks = [
        Check(
            f"swarm peak ≥ {TARGET_OF_BARE:.0%} of bare echo's",
            f"{swarm:.0f} vs {bare:.0f} req/s ({swarm / bare:.0%})",
            swarm >= TARGET_OF_BARE * bare,
        )
    ]
    lite = peak.get("LiteLLM")
    target = f"swarm peak ≥ {TARGET_OVER_LITELLM:g}x LiteLLM's"
    if lite is None:
        checks.append(Check(target, litellm_cell(litellm_reason), None))
    else:
        ratio = f"{swarm / lite:.1f}x" if lite else "LiteLLM answered nothing"
        checks.append(
            Check(
                target,
                f"{swarm:.0f} vs {lite:.0f} req/s ({ratio})",
                swarm >= TARGET_OVER_LITELLM * lite,
            )
        )
    return checks


def _litellm_version(runs: dict[str, Any]) -> str:
    return f"litellm {litellm_proxy.version()}" if "LiteLLM" in runs else ""
