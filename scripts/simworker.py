"""One process of ``scripts/simulate``: many real peers in one trio run.

    python -m scripts.simworker nodes --data DIR --first 0 --count 100 --bootstrap ADDR...
        [--spread S] [--record-ttl T]
    python -m scripts.simworker probe --data DIR --bootstrap ADDR --look-up PEER...

``nodes`` runs ``count`` echo nodes (``node.worker.runtime.Node``, each its own libp2p host,
DHT, RPC service and advertiser, exactly as ``bitinglip node start`` runs one), node ``i``
joining through ``bootstrap[i % len(bootstrap)]``, ``S`` seconds after the one before, its
DHT record living ``T`` seconds (default a real node's); each writes its status file to
``DIR/run/node-<i>.json``. ``probe`` joins one fresh peer and looks up node records it does
not hold, printing, as JSON, each lookup's latency and how many peers it asked.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import trio

from node.p2p.host import PeerHost, quiet_libp2p_logs
from node.worker import hardware, runtime
from node.worker.config import NodeConfig
from node.worker.runtime import Node
from protocols import node_key

# Joins are spread out a little: a thousand dials at the same instant only measure the
# listen backlog of the bootstrap peers. ``--spread`` paces them further.
JOIN_SPREAD_S = 0.02
NODE_NICE = 10


def peer_dir(data: Path, name: str) -> Path:
    """Where peer ``name`` keeps its keys: ``scripts/simulate`` provisions them before it
    starts a worker (provisioning rewrites the operator's public files: not in parallel)."""
    return data / "peers" / name


def node_config(data: Path, index: int, bootstrap: str, record_ttl: float) -> NodeConfig:
    return NodeConfig(
        data_dir=peer_dir(data, f"node-{index}"),
        listen=["/ip4/127.0.0.1/tcp/0"],
        bootstrap=[bootstrap],
        models=["echo"],
        ready_file=data / "run" / f"node-{index}.json",
        record_ttl=record_ttl,
    )


async def run_nodes(
    data: Path,
    first: int,
    count: int,
    bootstrap: list[str],
    spread: float,
    record_ttl: float,
) -> None:
    nodes = [
        Node(node_config(data, i, bootstrap[i % len(bootstrap)], record_ttl))
        for i in range(first, first + count)
    ]
    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(node.run)
            await trio.sleep(spread)


class _Counted:
    """Counts the remote queries the DHT of one host makes (each is one request/reply)."""

    def __init__(self, dht: Any) -> None:
        self.queries = 0
        for owner, name in (
            (dht.peer_routing, "_query_single_peer_for_closest"),
            (dht.value_store, "_get_from_peer"),
        ):
            setattr(owner, name, self._counting(getattr(owner, name)))

    def _counting(self, query: Any) -> Any:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.queries += 1
            return await query(*args, **kwargs)

        return counted


async def probe(data: Path, bootstrap: str, peers: list[str]) -> dict[str, Any]:
    host = PeerHost.of(peer_dir(data, "probe"), "node")
    counted = _Counted(host.dht)
    lookups: list[dict[str, Any]] = []
    async with host.running(["/ip4/127.0.0.1/tcp/0"], [bootstrap]):
        for peer in peers:
            key = node_key(peer)
            if host.dht.value_store.get(key.encode()) is not None:
                continue  # held here: no lookup to measure
            before = counted.queries
            started = time.monotonic()
            value = None  # not found within the bound
            with trio.move_on_after(10):
                value = await host.get(key)
            lookups.append(
                {
                    "seconds": round(time.monotonic() - started, 4),
                    "queries": counted.queries - before,
                    "found": value is not None,
                }
            )
    return {"lookups": lookups, "routing_table": len(host.dht.routing_table.get_peer_ids())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["nodes", "probe"])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--bootstrap", nargs="+", required=True)
    parser.add_argument("--look-up", nargs="*", default=[])
    parser.add_argument("--spread", type=float, default=JOIN_SPREAD_S, help="s between joins")
    parser.add_argument("--record-ttl", type=float, default=NodeConfig.record_ttl)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    # Who disconnects whom, and why: the first thing to read when a swarm does not settle.
    logging.getLogger("node.p2p.gate").setLevel(logging.INFO)
    quiet_libp2p_logs()
    # Echo nodes need no device: skip the probe's torch import (hundreds of MB a process).
    runtime._probe = hardware._cpu
    if args.mode == "nodes":
        # On a real swarm the gateways have cores of their own: here they would get one
        # share of the CPU against each node process's (twenty of them for 1,000 nodes)
        # and could admit a node only as fast as that share allows.
        os.nice(NODE_NICE)
        trio.run(
            run_nodes,
            args.data,
            args.first,
            args.count,
            args.bootstrap,
            args.spread,
            args.record_ttl,
        )
    else:
        print(json.dumps(trio.run(probe, args.data, args.bootstrap[0], args.look_up)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
