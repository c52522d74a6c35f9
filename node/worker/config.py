"""A node's settings: ``[node]`` in a TOML file, then ``BITINGLIP_NODE_*``, then flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from keys import default_data_dir


@dataclasses.dataclass
class NodeConfig:
    data_dir: Path = dataclasses.field(default_factory=default_data_dir)
    listen: list[str] = dataclasses.field(default_factory=lambda: ["/ip4/0.0.0.0/tcp/4001"])
    bootstrap: list[str] = dataclasses.field(default_factory=list)
    models: list[str] = dataclasses.field(default_factory=list)
    # [[node.engines]] tables: models served by vLLM, llama-server or SGLang (docs/engines.md)
    engines: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    model_store: Path | None = None  # where converted models live (default: data_dir)
    capacity: int = 0  # 0: the models' own batch sizes
    slots: int = 0  # generations per text model at once; 0: from its size and free memory
    max_queue: int = 16
    record_ttl: float = 30.0
    echo_delay: float = 0.0
    ready_file: Path | None = None
    log_level: str = "info"
    metrics_port: int | None = None  # Prometheus metrics over HTTP; None: off, 0: any free port
    metrics_host: str = "127.0.0.1"
