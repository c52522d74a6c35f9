"""Overhead: the latency a gateway adds to a chat call, and what LiteLLM's proxy adds.

Three targets, measured in one run on the same cores:

* **bare echo**: the echo server alone (``echo_server``), the floor;
* **swarm**: HTTP -> gateway (hypercorn + FastAPI, JWT check, limiter, usage row) -> libp2p
  RPC on the reused yamux stream -> an echo node -> back; one gateway, three echo nodes;
* **LiteLLM**: its proxy in front of three bare echo servers (``litellm_proxy``).

At concurrency 1 calls rotate over the targets one at a time, so the machine's drift hits
each alike; at concurrency 32 each target takes its turn with 32 keep-alive connections.
"Added" is a target's percentile minus the bare echo's at the same concurrency.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from scripts.benchlib import Stats, Swarm, header, machine
from scripts.benchsuite import litellm_proxy, plots
from scripts.benchsuite.loadgen import Target, alternating, closed_loop, pinned_here
from scripts.benchsuite.outcome import Check, Context, Outcome, checks_table, litellm_cell

SECTION = "## Gateway overhead"
PLOT = "overhead-latency-cdf.png"
TARGET_P50_MS = 1.5
TARGET_P99_MS = 6.0
TARGET_RATIO = 0.25  # of what LiteLLM adds
PROMPT = "hello"
LEVELS = (1, 32)


def targets(ctx: Context, swarm: Swarm) -> list[Target]:
    found = [
        Target("bare echo", ctx.fleet.echoes["echo-0"]),
        Target("swarm", swarm.urls["gateway"], {"authorization": f"Bearer {swarm.token}"}),
    ]
    proxy = ctx.fleet.litellm_ready()
    if proxy is not None:
        found.append(Target("LiteLLM", proxy.url, proxy.headers))
    return found


def run(ctx: Context, swarm: Swarm) -> Outcome:
    host = machine()
    calls, warmup = (100, 10) if ctx.quick else (1000, 50)
    seconds, warm_s = (1.0, 0.3) if ctx.quick else (5.0, 1.0)
    chosen = targets(ctx, swarm)
    ctx.fleet.pin(ctx.server_cores)
    samples: dict[int, dict[str, list[float]]] = {}
    with pinned_here(ctx.client_cores):
        print(f"overhead: {calls} calls each at concurrency 1, rotating", file=sys.stderr)
        samples[1] = asyncio.run(alternating(chosen, PROMPT, calls, warmup))
        samples[32] = {}
        for target in chosen:
            print(f"overhead: {target.name} at concurrency 32", file=sys.stderr)
            done = asyncio.run(closed_loop(target, PROMPT, 32, seconds, warm_s))
            if done.errors:
                raise RuntimeError(f"{target.name} at 32: {done.errors} errors: {done.first_error}")
            samples[32][target.name] = done.latencies
    stats = {c: {name: Stats.of(s) for name, s in by.items()} for c, by in samples.items()}
    paired = Stats.of(
        [s - b for s, b in zip(samples[1]["swarm"], samples[1]["bare echo"], strict=True)]
    )
    checks = _checks(stats, ctx.fleet.litellm_reason)
    data: dict[str, Any] = {
        f"c{c}": {
            name: s.rounded()
            | {
                "added_p50_ms": round(s.p50 - by["bare echo"].p50, 3),
                "added_p99_ms": round(s.p99 - by["bare echo"].p99, 3),
            }
            for name, s in by.items()
        }
        for c, by in stats.items()
    }
    data["swarm_added_per_pair_c1"] = paired.rounded()
    data["litellm"] = "run" if "LiteLLM" in stats[1] else litellm_cell(ctx.fleet.litellm_reason)
    figure = plots.latency_cdf(
        ctx.plots / PLOT, {f"concurrency {c}": by for c, by in samples.items()}
    )
    section = _section(ctx, host, stats, paired, checks, calls, warmup, seconds)
    return Outcome(data, checks, section, [figure])


def _checks(stats: dict[int, dict[str, Stats]], litellm_reason: str) -> list[Check]:
    checks = []
    for c, by in stats.items():
        base, swarm, lite = by["bare echo"], by["swarm"], by.get("LiteLLM")
        for p, limit in (("p50", TARGET_P50_MS), ("p99", TARGET_P99_MS)):
            added = getattr(swarm, p) - getattr(base, p)
            checks.append(
                Check(f"c={c}: {p} added ≤ {limit:g} ms", f"{added:.2f} ms", added <= limit)
            )
        for p in ("p50", "p99"):
            added = getattr(swarm, p) - getattr(base, p)
            target = f"c={c}: {p} added ≤ 1/4 of LiteLLM's"
            if lite is None:
                checks.append(Check(target, litellm_cell(litellm_reason), None))
                continue
            theirs = getattr(lite, p) - getattr(base, p)
            measured = (
                f"{added:.2f} ms vs {theirs:.2f} ms ({added / theirs:.2f}x)"
                if theirs > 0
                else f"{added:.2f} ms vs {theirs:.2f} ms"
            )
            checks.append(Check(target, measured, added <= TARGET_RATIO * theirs))
    return checks


def _section(
    ctx: Context,
    host: str,
    stats: dict[int, dict[str, Stats]],
    paired: Stats,
    checks: list[Check],
    calls: int,
    warmup: int,
    seconds: float,
) -> str:
    extra = f"litellm {litellm_proxy.version()}" if "LiteLLM" in stats[1] else ""
    lines = header(SECTION, ctx.command, host, extra)
    lines += [
        "What is compared: **bare echo** is the echo server alone (a plain ASGI callable on "
        "hypercorn's trio worker that parses the chat body and answers the same "
        "chat.completion shape); **swarm** is HTTP → gateway (hypercorn + FastAPI, JWT check, "
        "limiter, usage row) → libp2p RPC on the reused yamux stream → one of three echo "
        "nodes → back, each peer its own process; **LiteLLM** is LiteLLM's proxy (one uvicorn "
        "worker, master key, `least-busy` routing, an `rpm` limit on each deployment; virtual "
        "keys were not used because they need PostgreSQL) in front of three bare echo "
        f"servers. {ctx.cores()}. Concurrency 1: {warmup} warm-up calls each, then {calls} "
        "calls each, rotating over the targets one call at a time. Concurrency 32: each "
        f"target in turn, 32 keep-alive connections for {seconds:g} s. Prompt "
        f"{PROMPT!r}.",
        "",
        "| concurrency | target | p50 ms | p90 ms | p99 ms | mean ms | added p50 | added p99 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c, by in stats.items():
        base = by["bare echo"]
        for name, s in by.items():
            added = (
                "" if name == "bare echo" else f"{s.p50 - base.p50:.2f} | {s.p99 - base.p99:.2f}"
            )
            lines.append(
                f"| {c} | {name} | {s.p50:.2f} | {s.p90:.2f} | {s.p99:.2f} | {s.mean:.2f} "
                f"| {added or ' | '} |"
            )
        if "LiteLLM" not in by:
            lines.append(f"| {c} | LiteLLM | {litellm_cell(ctx.fleet.litellm_reason)} | | | | | |")
    lines += [
        "",
        f"Swarm minus bare echo per adjacent pair of calls at concurrency 1: p50 "
        f"{paired.p50:.2f} ms, p99 {paired.p99:.2f} ms.",
        "",
        *checks_table(checks),
        "",
        f"![latency CDFs](plots/{PLOT})",
    ]
    return "\n".join(lines) + "\n"
