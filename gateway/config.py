"""A gateway's settings: ``[gateway]`` in a TOML file, then ``BITINGLIP_GATEWAY_*``, then flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, get_args

from keys import default_data_dir

# How a gateway picks the node for a call (``gateway.routing.router``): by expected wait, or
# ignoring load, round-robin or at random (kept to measure expected wait against).
Policy = Literal["expected-wait", "round-robin", "random"]
POLICIES: tuple[Policy, ...] = get_args(Policy)


@dataclasses.dataclass
class GatewayConfig:
    data_dir: Path = dataclasses.field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8080
    listen: list[str] = dataclasses.field(default_factory=lambda: ["/ip4/0.0.0.0/tcp/4002"])
    bootstrap: list[str] = dataclasses.field(default_factory=list)
    max_body_bytes: int = 1 << 20
    request_timeout: float = 300.0
    ready_file: Path | None = None
    log_level: str = "info"
    # [gateway.plans.<name>] tables: requests_per_minute, tokens_per_day, images_per_day,
    # concurrent. A plan called "default" is built in (60, 200000, 100, 4) and may be redefined.
    plans: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    default_plan: str = "default"  # the plan new users get
    registration: bool = True  # whether anyone may register at POST /v1/auth/register
    session_ttl: float = 86400.0  # seconds a login token lives
    routing: Policy = "expected-wait"

    def __post_init__(self) -> None:
        if self.routing not in POLICIES:
            raise ValueError(f"routing must be one of {', '.join(POLICIES)}, not {self.routing!r}")
