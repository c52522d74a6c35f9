"""A node's settings: ``[node]`` in a TOML file, then ``BITINGLIP_NODE_*``, then flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from keys import default_data_dir
from protocols.operator import ModelSpec


@dataclasses.dataclass
class NodeConfig:
    data_dir: Path = dataclasses.field(default_factory=default_data_dir)
    listen: list[str] = dataclasses.field(default_factory=lambda: ["/ip4/0.0.0.0/tcp/4001"])
    bootstrap: list[str] = dataclasses.field(default_factory=list)
    mdns: bool = True  # announce on the LAN and join the peers heard there (node.p2p.lan)
    # NAT traversal (node.p2p.relay): whether others can dial this node ("private": it
    # takes slots at relays and advertises circuit addresses instead; "auto": it does so
    # when no relay can dial it back); whether it relays for other members, with how many
    # slots and what cap on each relayed connection.
    reachability: str = "public"
    relay: bool = False
    relay_reservations: int = 128
    relay_circuit_seconds: int = 3600
    relay_circuit_bytes: int = 1 << 30
    # Model ids, or [[node.models]] tables: id, and optionally dtype, slots, device.
    models: list[str | dict[str, Any]] = dataclasses.field(default_factory=list)
    # [[node.engines]] tables: models served by vLLM, llama-server or SGLang (docs/engines.md)
    engines: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # Where converted models live (default: one store for the host, models.default_model_store)
    model_store: Path | None = None
    capacity: int = 0  # 0: the models' own batch sizes
    slots: int = 0  # generations per text model at once; 0: from its size and free memory
    max_queue: int = 16
    # How long the node's DHT record verifies; re-put every third of it and on every change.
    # Liveness does not wait on it: a gateway drops a node whose stream breaks at once, and
    # one that falls silent within 3 s (docs/design.md, "Records live two minutes").
    record_ttl: float = 120.0
    echo_delay: float = 0.0
    ready_file: Path | None = None
    log_level: str = "info"
    metrics_port: int | None = None  # Prometheus metrics over HTTP; None: off, 0: any free port
    metrics_host: str = "127.0.0.1"
    # [node.placement]: load wanted models and unload idle ones on this node's own judgement
    # (node.worker.placement.Policy: allowed, pinned, reserve_bytes, idle_unload, wanted_for,
    # retry_after, pull). Off unless it names allowed models.
    placement: dict[str, Any] = dataclasses.field(default_factory=dict)

    def model_specs(self) -> list[ModelSpec]:
        """The models to load at start; ``ValueError`` naming a malformed entry.
        ``slots`` applies to the models that do not set their own."""
        specs = []
        for entry in self.models:
            if isinstance(entry, str):
                spec = ModelSpec(entry)
            elif isinstance(entry, dict):
                spec = ModelSpec.from_table(entry)
            else:
                raise ValueError(f"a model is an id or a table, not {entry!r}")
            if spec.slots == 0 and self.slots:
                spec = dataclasses.replace(spec, slots=self.slots)
            specs.append(spec)
        ids = [s.id for s in specs]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"models listed twice: {', '.join(twice)}")
        return specs
