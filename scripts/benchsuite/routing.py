"""Routing: which node a call goes to, when the nodes are not alike and the load is real.

Three echo nodes, one slot each, answer a 4-word prompt at 10, 10 and 30 ms a word (40, 40
and 120 ms a call), so together they answer about 58 calls a second. Open-loop Poisson
arrivals at 50%, 70% and 90% of that are replayed, the same arrival times for each policy:

* the gateway's routing policies, one gateway each, over the same three nodes:
  ``expected-wait`` (the default), ``round-robin``, ``random``;
* LiteLLM's proxy with ``least-busy`` routing over three bare echo servers that answer with
  the same per-word delays and one slot each;
* **ideal**: the same arrivals in a simulation (no processes, no overhead) where every call
  goes to the node where it would finish first, knowing every node's queue exactly.

Latency counts from the scheduled arrival. Nodes queue up to 1024 calls, so no call is
refused and every policy is judged by where it sends calls, not by failover.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scripts.benchlib import Stats, Swarm, header, machine, percentile
from scripts.benchsuite import litellm_proxy, plots
from scripts.benchsuite.loadgen import Target, open_loop, pinned_here
from scripts.benchsuite.outcome import Check, Context, Outcome, checks_table, litellm_cell

SECTION = "## Routing"
PLOT = "routing-p99.png"
MODEL = "echo"
LITELLM_MODEL = "echo-delayed"  # the LiteLLM model group over the delayed bare echoes
PROMPT = "one two three four"
WORD_DELAY = 0.010  # seconds a word on the fast nodes
NODES = (("fast-1", 1.0), ("fast-2", 1.0), ("slow", 3.0))  # name, times slower
LOADS = (0.5, 0.7, 0.9)
QUICK_LOADS = (0.7,)
POLICIES = ("expected-wait", "round-robin", "random")
TARGET_LOAD = 0.7
TARGET_OF_ROUND_ROBIN = 0.6
TARGET_OF_IDEAL = 1.2


def service_s(slower: float) -> float:
    return len(PROMPT.split()) * WORD_DELAY * slower


def capacity() -> float:
    """Calls a second the three nodes answer together (one slot each)."""
    return sum(1 / service_s(slower) for _, slower in NODES)


def poisson_arrivals(rate: float, seconds: float, seed: int) -> list[float]:
    """Arrival times (seconds from the start) of a Poisson process of ``rate`` per second."""
    rng = random.Random(seed)
    times, at = [], rng.expovariate(rate)
    while at < seconds:
        times.append(at)
        at += rng.expovariate(rate)
    return times


def ideal(arrivals: Sequence[float], services: Sequence[float], slots: int = 1) -> list[float]:
    """Latencies when each call goes, in arrival order, to the node where it would finish
    first; each node serves its queue first come first served on ``slots`` slots."""
    free = [[0.0] * slots for _ in services]  # per node: a heap of times its slots free up
    latencies = []
    for at in arrivals:
        finish, node = min((max(at, free[k][0]) + service, k) for k, service in enumerate(services))
        heapq.heapreplace(free[node], finish)
        latencies.append(finish - at)
    return latencies


@dataclass
class Result:
    latencies: list[float]
    errors: int = 0
    first_error: str = ""


def nodes() -> dict[str, list[str]]:
    """``node start`` flags for each node of the routing swarm."""
    return {
        name: ["--model", MODEL, "--slots", "1", "--max-queue", "1024",
               "--echo-delay", str(WORD_DELAY * slower)]
        for name, slower in NODES
    }  # fmt: skip


def gateways() -> dict[str, dict[str, str]]:
    return {f"gateway-{policy}": {"routing": policy} for policy in POLICIES}


def run(ctx: Context, swarm: Swarm) -> Outcome:
    host = machine()
    loads = QUICK_LOADS if ctx.quick else LOADS
    seconds = 1.0 if ctx.quick else 20.0
    chosen = [
        Target(policy, swarm.urls[f"gateway-{policy}"], {"authorization": f"Bearer {swarm.token}"})
        for policy in POLICIES
    ]
    proxy = ctx.fleet.litellm_ready()
    if proxy is not None:
        chosen.append(Target("LiteLLM least-busy", proxy.url, proxy.headers, LITELLM_MODEL))
    services = [service_s(slower) for _, slower in NODES]
    ctx.fleet.pin(ctx.server_cores)
    results: dict[float, dict[str, Result]] = {}
    for load in loads:
        arrivals = poisson_arrivals(load * capacity(), seconds, seed=int(load * 1000))
        results[load] = {}
        for target in chosen:
            print(f"routing: {target.name} at {load:.0%} ({len(arrivals)} calls)", file=sys.stderr)
            with pinned_here(ctx.client_cores):
                done = asyncio.run(open_loop(target, PROMPT, arrivals))
            results[load][target.name] = Result(done.latencies, done.errors, done.first_error)
        results[load]["ideal"] = Result(ideal(arrivals, services))
    checks = _checks(results)
    names = [*(t.name for t in chosen), "ideal"]
    figure = plots.grouped_bars(
        ctx.plots / PLOT,
        [f"{load:.0%} load" for load in loads],
        {name: [_p99(results[load][name]) for load in loads] for name in names},
        "p99 latency (ms, log scale)",
    )
    data: dict[str, Any] = {
        f"{load:.0%}": {
            name: (Stats.of(r.latencies).rounded() if r.latencies else {})
            | {"errors": r.errors, "calls": len(r.latencies) + r.errors}
            | ({"first_error": r.first_error} if r.errors else {})
            for name, r in by.items()
        }
        for load, by in results.items()
    }
    data["capacity_per_s"] = round(capacity(), 2)
    data["litellm"] = "run" if proxy is not None else litellm_cell(ctx.fleet.litellm_reason)
    section = _section(ctx, host, results, names, checks, seconds)
    return Outcome(data, checks, section, [figure])


def _p99(result: Result) -> float | None:
    return percentile(result.latencies, 99) * 1000 if result.latencies else None


def _checks(results: dict[float, dict[str, Result]]) -> list[Check]:
    if TARGET_LOAD not in results:
        return []
    by = results[TARGET_LOAD]
    ours, rr, best = (_p99(by[n]) for n in ("expected-wait", "round-robin", "ideal"))
    if ours is None or rr is None or best is None:
        return [Check(f"p99 at {TARGET_LOAD:.0%} load", "no calls answered", False)]
    return [
        Check(
            f"{TARGET_LOAD:.0%} load: expected-wait p99 ≤ {TARGET_OF_ROUND_ROBIN:g}x round-robin's",
            f"{ours:.0f} vs {rr:.0f} ms ({ours / rr:.2f}x)",
            ours <= TARGET_OF_ROUND_ROBIN * rr and by["expected-wait"].errors == 0,
        ),
        Check(
            f"{TARGET_LOAD:.0%} load: expected-wait p99 ≤ {TARGET_OF_IDEAL:g}x ideal's",
            f"{ours:.0f} vs {best:.0f} ms ({ours / best:.2f}x)",
            ours <= TARGET_OF_IDEAL * best and by["expected-wait"].errors == 0,
        ),
    ]


def _section(
    ctx: Context,
    host: str,
    results: dict[float, dict[str, Result]],
    names: list[str],
    checks: list[Check],
    seconds: float,
) -> str:
    extra = f"litellm {litellm_proxy.version()}" if "LiteLLM least-busy" in names else ""
    speeds = ", ".join(f"{service_s(s) * 1000:.0f} ms" for _, s in NODES)
    lines = header(SECTION, ctx.command, host, extra)
    lines += [
        f"Three echo nodes with one slot each answer the {len(PROMPT.split())}-word prompt in "
        f"{speeds} (`--echo-delay` a word: 1x, 1x, 3x), together {capacity():.1f} calls/s. "
        f"Open-loop Poisson arrivals for {seconds:g} s at each load, the same arrival times "
        "for every policy; latency from the scheduled arrival to the answer. Each gateway "
        "policy has its own gateway over the same three nodes (`routing` under `[gateway]`); "
        "nodes queue up to 1024 calls, so nothing is refused. LiteLLM (its proxy, one worker, "
        "`least-busy`, an `rpm` limit of each deployment's capacity, no virtual keys: they "
        "need PostgreSQL) routes over three bare echo servers with the same delays and one "
        "slot each. **ideal** is a simulation of the same arrivals, no processes: each call "
        "goes where it would finish first, knowing every queue exactly, with no overhead. "
        f"{ctx.cores()}.",
        "",
        "| load | " + " | ".join(names) + " |",
        "|---:|" + "---:|" * len(names),
    ]
    for load, by in results.items():
        lines.append(f"| {load:.0%} | " + " | ".join(_cell(by[n]) for n in names) + " |")
    lines += ["", "Each cell: p50 / p99 latency in ms."]
    if "LiteLLM least-busy" not in names:
        lines += [f"LiteLLM least-busy: {litellm_cell(ctx.fleet.litellm_reason)}."]
    lines += ["", *checks_table(checks), "", f"![p99 latency per policy and load](plots/{PLOT})"]
    return "\n".join(lines) + "\n"


def _cell(result: Result) -> str:
    if not result.latencies:
        return f"no answer ({result.errors} errors)"
    stats = Stats.of(result.latencies)
    errors = f", {result.errors} errors" if result.errors else ""
    return f"{stats.p50:.0f} / {stats.p99:.0f}{errors}"


def litellm_groups() -> list[tuple[float, int]]:
    """(delay a word, rpm) of each delayed bare echo behind LiteLLM: the nodes' speeds, and
    an rpm limit of what each can answer in a minute."""
    return [(WORD_DELAY * slower, round(60 / service_s(slower))) for _, slower in NODES]
