"""A swarm of N real libp2p peers on this machine: how fast it converges, what it costs idle,
and how fast it forgets nodes that die.

    scripts/simulate --peers 100 [--gateways 3] [--per-process 25] [--join-rate R]
                     [--record-ttl 120] [--idle-s 10] [--json] [--no-write] [--keep]

Gateways are real ``bitinglip gateway start`` processes sharing one accounts database; the
other peers are echo nodes, ``--per-process`` to a process (``scripts/simworker.py``: one
trio run holding many hosts, at nice 10), joining as fast as their processes start them or
``--join-rate`` nodes a second in all. Twenty-five to a process by default: a process costs
~1 s of CPU to import and ~100 MB before its first node, which a real node pays on a
machine of its own, and ten processes for a hundred nodes spent a third of the swarm's
CPU until convergence on imports. A hundred peers started together converge on two cores
in about 10 s (docs/benchmarks.md, Swarm simulation). Node ``i`` joins through gateway
``i mod G`` (gateways are the published bootstrap peers).
Measured:

- convergence: from the start of the first node process, and from the last node's
  ``ready``, until every gateway's ``/v1/peers`` lists every node healthy with ``echo``;
- DHT lookups: once every node has written its record (a node's first write waits up to half
  the record's TTL), a fresh peer joins and looks up 20 node records it does not
  hold;
- idle cost over ``--idle-s`` seconds: CPU and resident memory per peer (node processes,
  gateway processes), and TCP bytes per peer per second (kernel socket counters, ``ss -ti``);
- failure: the node processes holding ~10% of the nodes are SIGKILLed at once; time until
  no gateway routes to any of them.

Results go to the ``## Swarm simulation`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

import keys
from node.cli.up import LocalSwarm
from node.p2p.readiness import read_status
from node.worker.config import NodeConfig
from scripts.benchlib import (
    bench_token,
    gateway_config,
    header,
    machine,
    percentile,
    write_section,
)
from scripts.simworker import peer_dir

POLL_S = 0.25
# A gateway's /v1/peers takes ~1 ms per node listed: at a thousand nodes, asking every
# 0.25 s would be most of what the gateways do.
POLL_PER_NODE_S = 1 / 400
PROGRESS_S = 5.0
LOOKUPS = 20
CONVERGE_TIMEOUT_S = 300.0
KILL_FRACTION = 0.1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def targets(peers: int) -> float:
    """Convergence target: 10 s at 100 peers, 60 s at 1,000 (linear between and past)."""
    return 10.0 + (peers - 100) * 50.0 / 900.0 if peers > 100 else 10.0


class Sim:
    def __init__(
        self,
        data: Path,
        gateways: int,
        nodes: int,
        per_process: int,
        idle_s: float,
        join_rate: float,
        record_ttl: float,
    ) -> None:
        self.data = data
        self.idle_s = idle_s
        self.swarm = LocalSwarm(data)
        self.gateways = [f"gateway-{g}" for g in range(gateways)]
        self.nodes = nodes
        self.per_process = per_process
        self.processes = math.ceil(nodes / per_process)
        self.join_rate = join_rate
        self.record_ttl = record_ttl
        self.workers: list[tuple[subprocess.Popen[bytes], range]] = []
        self.urls: list[str] = []
        self.token = ""

    # Starting.

    def start_gateways(self) -> None:
        accounts = self.data / "accounts"
        accounts.mkdir(exist_ok=True)
        config = gateway_config(self.data / "gateway.toml", {"database_dir": str(accounts)})
        first: list[str] = []
        for name in self.gateways:
            extra = ["--port", "0", "--config", str(config)]
            extra += [x for a in first for x in ("--bootstrap", a)]
            self.swarm.spawn(name, "gateway", extra)
            self.swarm.wait([name], "ready", 60)
            first = first or [str(self.swarm.status(name)["addrs"][0])]  # type: ignore[index]
        self.urls = [str(self.swarm.status(g)["url"]) for g in self.gateways]
        self.token = bench_token(self.data, accounts)

    def start_nodes(self) -> None:
        addrs = [str(self.swarm.status(g)["addrs"][0]) for g in self.gateways]  # type: ignore[index]
        (self.data / "run").mkdir(exist_ok=True)
        log = (self.data / "logs" / "nodes.log").open("ab")
        for i in range(self.nodes):
            keys.provision(peer_dir(self.data, f"node-{i}"), self.data, "node")
        for first in range(0, self.nodes, self.per_process):
            count = min(self.per_process, self.nodes - first)
            # Node i joins through gateway i mod G: the worker takes them in that order.
            order = [addrs[(first + i) % len(addrs)] for i in range(len(addrs))]
            command = [
                sys.executable, "-m", "scripts.simworker", "nodes", "--data", str(self.data),
                "--first", str(first), "--count", str(count), "--bootstrap", *order,
                "--record-ttl", str(self.record_ttl),
            ]  # fmt: skip
            if self.join_rate > 0:  # the processes start together: each takes its share
                command += ["--spread", str(self.processes / self.join_rate)]
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            self.workers.append((proc, range(first, first + count)))

    def node_status(self, index: int) -> dict[str, Any]:
        return read_status(self.data / "run" / f"node-{index}.json")

    def wait_nodes_ready(self, timeout: float) -> dict[int, str]:
        """Every node's peer id, once all are ready."""
        deadline = time.monotonic() + timeout
        ready: dict[int, str] = {}
        while len(ready) < self.nodes:
            for proc, _ in self.workers:
                if proc.poll() is not None:
                    tail = (self.data / "logs" / "nodes.log").read_text()[-3000:]
                    raise RuntimeError(f"a node process exited:\n{tail}")
            for i in range(self.nodes):
                status = self.node_status(i)
                if i not in ready and status.get("state") == "ready":
                    ready[i] = str(status["peer_id"])
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.nodes - len(ready)} nodes not ready in {timeout:.0f} s")
            time.sleep(POLL_S)
        return ready

    # Watching the gateways.

    def routed(self, url: str) -> set[str]:
        """The nodes a gateway lists healthy with echo ready."""
        reply = httpx.get(
            f"{url}/v1/peers", headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )
        return {
            e["peer_id"]
            for e in reply.json()["data"]
            if e.get("role") != "gateway"
            and e["healthy"]
            and any(m["id"] == "echo" and m["state"] == "ready" for m in e["models"])
        }

    def until(self, done: Callable[[set[str]], bool], timeout: float) -> float:
        """Seconds until ``done`` holds for what every gateway routes to."""
        started = shown = time.monotonic()
        while time.monotonic() - started < timeout:
            routed = [self.routed(url) for url in self.urls]
            if all(done(r) for r in routed):
                return time.monotonic() - started
            if time.monotonic() - shown >= PROGRESS_S:  # long waits show where they are
                took, counts = time.monotonic() - started, " ".join(str(len(r)) for r in routed)
                print(f"{took:6.1f} s: gateways route {counts}", file=sys.stderr)
                shown = time.monotonic()
            time.sleep(max(POLL_S, self.nodes * POLL_PER_NODE_S))
        return math.inf

    # Measuring.

    def probe(self, peers: list[str]) -> dict[str, Any]:
        keys.provision(peer_dir(self.data, "probe"), self.data, "node")
        status = self.node_status(random.randrange(self.nodes))
        command = [
            sys.executable, "-m", "scripts.simworker", "probe", "--data", str(self.data),
            "--bootstrap", str(status["addrs"][0]), "--look-up", *peers,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:  # reported with the rest: the other measures still count
            return {"lookups": [], "error": done.stderr[-2000:]}
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def idle(self) -> dict[str, Any]:
        """CPU, memory and TCP traffic of nodes and gateways over ``idle_s`` seconds."""
        groups = {
            "node": [p.pid for p, _ in self.workers],
            "gateway": [self.swarm.procs[g].pid for g in self.gateways],
        }
        peers = {"node": self.nodes, "gateway": len(self.gateways)}
        before = {k: (_cpu(pids), _tcp_bytes(set(pids))) for k, pids in groups.items()}
        time.sleep(self.idle_s)
        result: dict[str, Any] = {}
        for kind, pids in groups.items():
            cpu = _cpu(pids) - before[kind][0]
            sent = _sent_since(before[kind][1], _tcp_bytes(set(pids)))
            n = peers[kind]
            result[kind] = {
                "cpu_percent_per_peer": round(100 * cpu / self.idle_s / n, 3),
                "rss_mib_per_peer": round(_rss(pids) / n / 2**20, 2),
                "tcp_bytes_out_per_peer_s": round(sent / self.idle_s / n),
            }
        gateway = result["gateway"]
        gateway["cpu_percent_per_tracked_node"] = round(
            gateway["cpu_percent_per_peer"] / self.nodes, 5
        )
        return result

    def cpu_seconds(self) -> float:
        """CPU time used so far by the gateway and node processes that are running."""
        pids = [self.swarm.procs[g].pid for g in self.gateways]
        return _cpu(pids + [p.pid for p, _ in self.workers if p.poll() is None])

    def kill_tenth(self) -> set[int]:
        """SIGKILL the node processes holding about a tenth of the nodes, all at once."""
        want = max(1, round(self.nodes * KILL_FRACTION))
        doomed: list[tuple[subprocess.Popen[bytes], range]] = []
        for proc, indices in reversed(self.workers):
            if sum(len(r) for _, r in doomed) >= want:
                break
            doomed.append((proc, indices))
        for proc, _ in doomed:
            proc.kill()
        for proc, _ in doomed:
            proc.wait()
        return {i for _, r in doomed for i in r}

    def stop(self) -> None:
        for proc, _ in self.workers:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.swarm.stop()


def _cpu(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # it exited: counted as lost, not measured
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def _rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except FileNotFoundError:
            continue
    return total


def _tcp_bytes(pids: set[int]) -> dict[tuple[str, str], int]:
    """Bytes sent so far on each TCP socket (local, remote address) the processes
    ``pids`` hold now."""
    out = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True, check=True).stdout
    sent: dict[tuple[str, str], int] = {}
    owner: tuple[str, str] | None = None
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):
            found = re.search(r"pid=(\d+)", line)
            fields = line.split()
            mine = found is not None and int(found.group(1)) in pids and len(fields) > 4
            owner = (fields[3], fields[4]) if mine else None
        elif owner is not None:
            count = re.search(r"bytes_sent:(\d+)", line)
            sent[owner] = int(count.group(1)) if count else 0
    return sent


def _sent_since(before: dict[tuple[str, str], int], after: dict[tuple[str, str], int]) -> int:
    """Bytes sent between two ``_tcp_bytes``: sockets closed in between are not counted."""
    return sum(n - before.get(socket, 0) for socket, n in after.items())


def run(
    peers: int,
    gateways: int,
    per_process: int,
    idle_s: float,
    keep: bool,
    join_rate: float,
    record_ttl: float,
) -> dict[str, Any]:
    nodes = peers - gateways
    place = (
        contextlib.nullcontext(tempfile.mkdtemp(prefix="simulate-"))
        if keep
        else tempfile.TemporaryDirectory(prefix="simulate-")
    )
    with place as tmp:
        if keep:
            print(f"keys, status files and logs stay in {tmp}", file=sys.stderr)
        data = Path(tmp)
        keys.init_operator(data)
        sim = Sim(data, gateways, nodes, per_process, idle_s, join_rate, record_ttl)
        try:
            sim.start_gateways()
            started, gateway_cpu = time.monotonic(), sim.cpu_seconds()
            sim.start_nodes()
            ids = sim.wait_nodes_ready(600)
            last_ready = time.monotonic()
            everyone = set(ids.values())
            converged = sim.until(lambda routed: everyone <= routed, CONVERGE_TIMEOUT_S)
            join_cpu = sim.cpu_seconds() - gateway_cpu
            after_ready = time.monotonic() - last_ready
            least = min(len(sim.routed(url) & everyone) for url in sim.urls)
            # Every node's first DHT write has happened (each waits up to half its record's
            # TTL: node.p2p.advertise) before a lookup is timed.
            time.sleep(max(0.0, last_ready + record_ttl / 2 + 2 - time.monotonic()))
            sample = random.sample(sorted(everyone), min(LOOKUPS, nodes))
            probed = sim.probe(sample)
            lookups = probed["lookups"]
            idle = sim.idle()
            lost = sum(p.poll() is not None for p, _ in sim.workers)
            dead = {ids[i] for i in sim.kill_tenth()}
            forgotten = sim.until(lambda routed: not routed & dead, 120)
        finally:
            sim.stop()
    found = [x for x in lookups if x["found"]]
    return {
        "peers": peers,
        "gateways": gateways,
        "nodes": nodes,
        "node_processes": sim.processes,
        "join_rate": join_rate or None,
        "record_ttl_s": record_ttl,
        "converged_from_start_s": round(converged + (last_ready - started), 2)
        if math.isfinite(converged)
        else None,
        "converged_after_last_ready_s": round(after_ready, 2) if math.isfinite(converged) else None,
        "least_routed_by_a_gateway": least,
        # CPU time of every peer process until converged (or given up): against the cores
        # times the wall time, whether the machine or the protocol set the pace.
        "join_cpu_s": round(join_cpu, 1),
        "cores": os.cpu_count(),
        "lookup_found": f"{len(found)}/{len(lookups)}",
        "lookup_error": probed.get("error"),
        "lookup_p50_ms": round(percentile([x["seconds"] for x in found], 50) * 1000, 1)
        if found
        else None,
        "lookup_p99_ms": round(percentile([x["seconds"] for x in found], 99) * 1000, 1)
        if found
        else None,
        "lookup_queries_mean": round(sum(x["queries"] for x in lookups) / len(lookups), 1)
        if lookups
        else None,
        "idle": idle,
        "node_processes_lost": lost,  # exited by themselves before the kill
        "killed": len(dead),
        "killed_out_s": round(forgotten, 2) if math.isfinite(forgotten) else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers", type=int, default=100)
    parser.add_argument("--gateways", type=int, default=3)
    parser.add_argument(
        "--per-process", type=int, default=25, help="nodes per process (see docs/benchmarks.md)"
    )
    parser.add_argument("--idle-s", type=float, default=10.0, help="idle cost window")
    parser.add_argument(
        "--join-rate",
        type=float,
        default=0.0,
        help="nodes joining per second, all processes together (default: as fast as they start)",
    )
    parser.add_argument(
        "--record-ttl",
        type=float,
        default=NodeConfig.record_ttl,
        help="seconds a node's DHT record lives (default a real node's); the lookups wait for"
        " half of it, the longest a node waits to write its record first",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/")
    parser.add_argument(
        "--keep", action="store_true", help="keep the swarm's directory (logs) when done"
    )
    args = parser.parse_args()
    if args.peers <= args.gateways:
        parser.error("--peers must be more than --gateways")
    per_process = max(1, args.per_process)
    host = machine()
    result = run(
        args.peers,
        args.gateways,
        per_process,
        args.idle_s,
        keep=args.keep,
        join_rate=args.join_rate,
        record_ttl=args.record_ttl,
    )
    target = targets(args.peers)
    took = result["converged_from_start_s"]
    met = took is not None and took <= target
    print(
        json.dumps(
            result | {"target_s": target, "target_met": met}, indent=None if args.json else 2
        )
    )
    if not args.no_write:
        command = shlex.join(["scripts/simulate", *sys.argv[1:]])
        write_section("\n".join(_section(result, command, host, target, met)))
    return 0 if met else 2


def _section(
    result: dict[str, Any], command: str, host: str, target: float, met: bool
) -> list[str]:
    idle = result["idle"]
    lines = header("## Swarm simulation", command, host)
    lines += [
        f"{result['gateways']} gateway processes and {result['nodes']} echo nodes in "
        f"{result['node_processes']} processes; every node joins through one gateway.",
        "",
        "| measure | value | target |",
        "| --- | --- | --- |",
        f"| start → every gateway routes to every node | {result['converged_from_start_s']} s | "
        f"≤ {target:g} s: {'met' if met else 'missed'} |",
        f"| last node ready → every gateway routes to it | "
        f"{result['converged_after_last_ready_s']} s | |",
        f"| CPU time of all peers until then | {result['join_cpu_s']} s on "
        f"{result['cores']} cores | |",
        f"| nodes routed by the gateway that routes fewest, at the end | "
        f"{result['least_routed_by_a_gateway']} of {result['nodes']} | all |",
        f"| DHT lookup of a record not held (p50 / p99) | {result['lookup_p50_ms']} / "
        f"{result['lookup_p99_ms']} ms, found {result['lookup_found']} | |",
        f"| peers asked per lookup (mean) | {result['lookup_queries_mean']} | |",
    ]
    for kind in ("node", "gateway"):
        x = idle[kind]
        lines.append(
            f"| idle {kind}: CPU / RSS / TCP out per peer | {x['cpu_percent_per_peer']} % / "
            f"{x['rss_mib_per_peer']} MiB / {x['tcp_bytes_out_per_peer_s']} B/s | |"
        )
    lines += [
        "| idle gateway CPU per tracked node | "
        f"{idle['gateway']['cpu_percent_per_tracked_node']} % | flat |",
        f"| node processes that exited by themselves | {result['node_processes_lost']} | 0 |",
        f"| {result['killed']} nodes SIGKILLed at once → no gateway routes to any of them | "
        f"{result['killed_out_s']} s | |",
        "",
    ]
    return lines
