"""Queueing: a burst three times what the swarm can answer, from several users at once.

Two echo nodes with two slots each answer a 4-word prompt in 200 ms (``--echo-delay``
50 ms a word), so together they answer 20 calls a second. Poisson arrivals at three times
that, spread at random over four users, are sent as streamed calls for a few seconds; the
gateway's fair queue holds what the nodes cannot take (docs/design.md, Busy swarm). It
measures:

* failures: every call must be answered within the gateway's 60 s queue limit;
* fairness: each user's mean wait, and the spread between the highest and the lowest;
* p99 wait against **ideal**: the same arrivals and service times simulated as one FIFO
  queue in front of all four slots, with no overhead;
* the ETA: the estimate in a waiting call's first ``: queued`` comment against the wait
  its ``: dispatched`` comment reports.

A call's wait is its latency (from its scheduled arrival to its last byte) less the 200 ms
of service it needs: time spent anywhere but on a slot.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scripts.benchlib import Swarm, bench_token, header, machine, percentile
from scripts.benchsuite.loadgen import pinned_here
from scripts.benchsuite.outcome import Check, Context, Outcome, checks_table
from scripts.benchsuite.routing import poisson_arrivals

SECTION = "## Queueing"
MODEL = "echo"
PROMPT = "one two three four"
WORD_DELAY = 0.05  # seconds a word
NODES = 2
SLOTS = 2  # a node's slots
OVERLOAD = 3.0  # arrivals as a multiple of what the swarm answers
USERS = 4
SECONDS, QUICK_SECONDS = 4.0, 0.5  # how long calls arrive
LIMIT = 60.0  # the gateway's max_queue_wait: no call may wait longer
TARGET_OF_IDEAL = 1.2

_QUEUED = re.compile(r"^: queued, position \d+, eta ([0-9.]+)s")
_DISPATCHED = re.compile(r"^: dispatched, waited ([0-9.]+)s")


def service_s() -> float:
    return len(PROMPT.split()) * WORD_DELAY


def capacity() -> float:
    """Calls a second the swarm answers."""
    return NODES * SLOTS / service_s()


def nodes() -> dict[str, list[str]]:
    """``node start`` flags for each node: its own queue is short, so calls wait at the
    gateway, where the fairness is."""
    flags = ["--model", MODEL, "--slots", str(SLOTS), "--max-queue", "4"]
    return {f"node-{i}": [*flags, "--echo-delay", str(WORD_DELAY)] for i in range(NODES)}


def fifo(arrivals: Sequence[float], service: float, slots: int) -> list[float]:
    """Waits when the calls, in arrival order, each take the first slot that frees."""
    free = [0.0] * slots  # a heap of the times slots free up
    waits = []
    for at in arrivals:
        start = max(at, free[0])
        heapq.heapreplace(free, start + service)
        waits.append(start - at)
    return waits


@dataclass
class Call:
    user: int
    at: float  # scheduled arrival, seconds from the start
    latency: float | None = None  # None: it failed
    eta: float | None = None  # the first estimate it heard, if it waited
    waited: float | None = None  # what the gateway said it waited
    error: str = ""

    @property
    def wait(self) -> float:
        assert self.latency is not None
        return max(0.0, self.latency - service_s())


async def _one(client: Any, url: str, token: str, call: Call, start: float) -> None:
    import httpx

    await asyncio.sleep(max(0.0, start + call.at - time.monotonic()))
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    headers = {"authorization": f"Bearer {token}"}
    done = False
    try:
        async with client.stream(
            "POST", f"{url}/v1/chat/completions", json=body, headers=headers
        ) as response:
            if response.status_code != 200:
                call.error = f"{response.status_code}: {(await response.aread())[:200]!r}"
                return
            if "x-queue-wait" in response.headers:
                call.waited = float(response.headers["x-queue-wait"])
            async for line in response.aiter_lines():
                if call.eta is None and (m := _QUEUED.match(line)):
                    call.eta = float(m.group(1))
                elif m := _DISPATCHED.match(line):
                    call.waited = float(m.group(1))
                done = done or line == "data: [DONE]"
    except httpx.HTTPError as exc:
        call.error = f"{type(exc).__name__}: {exc}"
        return
    if not done:
        call.error = "the stream ended without [DONE]"
        return
    call.latency = time.monotonic() - start - call.at


async def burst(url: str, tokens: Sequence[str], calls: list[Call]) -> None:
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=LIMIT + 30, limits=limits) as client:
        start = time.monotonic() + 0.2
        await asyncio.gather(*(_one(client, url, tokens[c.user], c, start) for c in calls))


def user_tokens(swarm: Swarm) -> list[str]:
    accounts = swarm.local.data_dir / "accounts"
    return [bench_token(swarm.local.data_dir, accounts, f"user-{u}") for u in range(USERS)]


def run(ctx: Context, swarm: Swarm) -> Outcome:
    host = machine()
    seconds = QUICK_SECONDS if ctx.quick else SECONDS
    rng = random.Random(7)
    arrivals = poisson_arrivals(OVERLOAD * capacity(), seconds, seed=3)
    calls = [Call(rng.randrange(USERS), at) for at in arrivals]
    tokens = user_tokens(swarm)
    ctx.fleet.pin(ctx.server_cores)
    print(f"queueing: {len(calls)} calls in {seconds:g} s from {USERS} users", file=sys.stderr)
    with pinned_here(ctx.client_cores):
        asyncio.run(burst(swarm.urls["gateway"], tokens, calls))
    ideal = fifo(arrivals, service_s(), NODES * SLOTS)
    data = _data(calls, ideal)
    checks = _checks(data)
    return Outcome(data, checks, _section(ctx, host, data, checks, seconds))


def _user_means(waits: Sequence[tuple[int, float]]) -> dict[str, float]:
    by: dict[int, list[float]] = {}
    for user, wait in waits:
        by.setdefault(user, []).append(wait)
    return {f"user-{u}": round(statistics.fmean(w), 3) for u, w in sorted(by.items())}


def _spread(means: dict[str, float]) -> float:
    return round(max(means.values()) - min(means.values()), 3) if means else 0.0


def _data(calls: list[Call], ideal: list[float]) -> dict[str, Any]:
    answered = [c for c in calls if c.latency is not None]
    failed = [c for c in calls if c.latency is None]
    waits = [c.wait for c in answered]
    means = _user_means([(c.user, c.wait) for c in answered])
    ideal_means = _user_means([(c.user, w) for c, w in zip(calls, ideal, strict=True)])
    errors = [abs(c.eta - c.waited) for c in answered if c.eta is not None and c.waited is not None]
    data: dict[str, Any] = {
        "calls": len(calls),
        "failed": len(failed),
        "capacity_per_s": round(capacity(), 2),
        "max_latency_s": round(max((c.latency or 0.0) for c in answered), 3) if answered else None,
        "wait_s": _summary(waits),
        "ideal_wait_s": _summary(ideal),
        "user_mean_wait_s": means,
        "user_spread_s": _spread(means),
        "ideal_user_spread_s": _spread(ideal_means),
        "eta_error_s": {"estimated": len(errors)} | _summary(errors, ("p50", "p90")),
    }
    if failed:
        data["first_error"] = failed[0].error
    return data


def _summary(
    values: Sequence[float], which: Sequence[str] = ("mean", "p50", "p99")
) -> dict[str, float]:
    if not values:
        return {}
    found = {"mean": statistics.fmean(values)} | {
        f"p{p}": percentile(values, p) for p in (50, 90, 99)
    }
    return {k: round(found[k], 3) for k in which}


def _checks(data: dict[str, Any]) -> list[Check]:
    ok = data["failed"] == 0 and (data["max_latency_s"] or 0.0) <= LIMIT
    checks = [
        Check(
            f"no call fails, each within {LIMIT:.0f} s",
            f"{data['failed']} of {data['calls']} failed, slowest {data['max_latency_s']} s",
            ok,
        )
    ]
    ours, best = data["wait_s"].get("p99"), data["ideal_wait_s"].get("p99")
    if ours is not None and best:
        checks.append(
            Check(
                f"p99 wait ≤ {TARGET_OF_IDEAL:g}x one ideal FIFO queue's",
                f"{ours:.2f} vs {best:.2f} s ({ours / best:.2f}x)",
                ours <= TARGET_OF_IDEAL * best,
            )
        )
    return checks


def _section(
    ctx: Context, host: str, data: dict[str, Any], checks: list[Check], seconds: float
) -> str:
    lines = header(SECTION, ctx.command, host)
    waits, ideal, eta = data["wait_s"], data["ideal_wait_s"], data["eta_error_s"]
    lines += [
        f"{NODES} echo nodes with {SLOTS} slots each answer the {len(PROMPT.split())}-word "
        f"prompt in {service_s() * 1000:.0f} ms, together {capacity():.0f} calls/s. Poisson "
        f"arrivals at {OVERLOAD:g}x that for {seconds:g} s ({data['calls']} streamed calls), "
        f"each from one of {USERS} users at random, wait in one gateway's fair queue. A "
        "call's wait is its latency (from its scheduled arrival) less its 200 ms of service. "
        "**ideal** simulates the same arrivals as one FIFO queue in front of all the slots, "
        "with no overhead. The machine was shared with other work while this ran (2 cores): "
        f"the overhead in these numbers is partly theirs. {ctx.cores()}.",
        "",
        "| | mean | p50 | p99 |",
        "|---|---:|---:|---:|",
        "| wait, swarm (s) | " + " | ".join(_cell(waits, k) for k in ("mean", "p50", "p99")) + " |",
        "| wait, ideal FIFO (s) | "
        + " | ".join(_cell(ideal, k) for k in ("mean", "p50", "p99"))
        + " |",
        "",
        "Mean wait per user (s): "
        + ", ".join(f"{u} {w:.2f}" for u, w in data["user_mean_wait_s"].items())
        + f"; spread {data['user_spread_s']:.2f} s (ideal FIFO on the same arrivals: "
        f"{data['ideal_user_spread_s']:.2f} s).",
        "",
        f"ETA: {eta.get('estimated', 0)} calls waited and heard an estimate; the estimate's "
        f"error against the wait they had: median {_cell(eta, 'p50')} s, p90 "
        f"{_cell(eta, 'p90')} s.",
        "",
        *checks_table(checks),
        "",
    ]
    return "\n".join(lines)


def _cell(values: dict[str, float], key: str) -> str:
    return f"{values[key]:.2f}" if key in values else "n/a"
