"""A gateway's settings: ``[gateway]`` in a TOML file, then ``BITINGLIP_GATEWAY_*``, then flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, get_args

from keys import ScryptCost, default_data_dir

Registration = Literal["open", "invite", "closed"]

# How a gateway picks the node for a call (``gateway.routing.router``): by expected wait, or
# ignoring load, round-robin or at random (kept to measure expected wait against).
Policy = Literal["expected-wait", "round-robin", "random"]
POLICIES: tuple[Policy, ...] = get_args(Policy)


@dataclasses.dataclass
class GatewayConfig:
    data_dir: Path = dataclasses.field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8080
    # Prometheus metrics on a listener of their own (0: any free port), and then no longer on
    # the public port; None: ``/metrics`` on the public port.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    listen: list[str] = dataclasses.field(default_factory=lambda: ["/ip4/0.0.0.0/tcp/4002"])
    bootstrap: list[str] = dataclasses.field(default_factory=list)
    mdns: bool = True  # announce on the LAN and join the peers heard there (node.p2p.lan)
    # NAT traversal (node.p2p.relay): whether this gateway relays for the members behind
    # NATs, with how many slots and what cap on each relayed connection.
    relay: bool = True
    relay_reservations: int = 128
    relay_circuit_seconds: int = 3600
    relay_circuit_bytes: int = 1 << 30
    max_body_bytes: int = 1 << 20  # every request body, chats with pictures included
    max_upload_bytes: int = 25 << 20  # an audio file to transcribe or translate
    max_audio_seconds: float = 1800.0  # the longest audio transcribed in one call
    # Whether pictures in chats may be http(s) URLs the gateway fetches (only public hosts,
    # each within image_fetch_timeout seconds); off: data URLs only.
    fetch_image_urls: bool = False
    image_fetch_timeout: float = 10.0
    request_timeout: float = 300.0
    # Images answered as URLs: how long each is kept (seconds), and how much disk they take
    # at most together (the oldest go first).
    image_ttl: float = 3600.0
    image_store_bytes: int = 1 << 30
    ready_file: Path | None = None
    log_level: str = "info"
    # [gateway.plans.<name>] tables: requests_per_minute, tokens_per_day, images_per_day,
    # concurrent, audio_seconds_per_day, priority (higher waits less in the queue). A plan
    # called "default" is built in (60, 200000, 100, 4, 3600, priority 1) and may be redefined.
    plans: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    default_plan: str = "default"  # the plan new users get
    # Who may register at POST /v1/auth/register: "open" (anyone), "invite" (with a code
    # from `bitinglip users invite`), "closed" (only the operator adds users).
    registration: Registration = "closed"
    session_ttl: float = 86400.0  # seconds a login token lives
    max_token_ttl: float = 365 * 86400.0  # no token may live longer: refused at issue and use
    # Where gateway.db (users, keys, usage) lives; default the data directory. Gateways
    # that share the file share their users and accept each other's tokens; no others do.
    database_dir: Path | None = None
    scrypt_n: int = 2**17  # password hashing cost (OWASP's guidance); old hashes still verify
    password_hashers: int = 2  # passwords hashed at once; a few more wait, the rest get 503
    auth_per_address: int = 20  # login and register attempts a minute per client address
    auth_per_user: int = 10  # ... and per user name
    # Jobs (POST /v1/jobs): how many run at once on this gateway, and how long a finished
    # job and its result are kept (seconds).
    jobs_running: int = 4
    job_ttl: float = 86400.0
    # Whether a job may name a webhook to call when it ends. Only public hosts are called,
    # unless webhook_private_hosts lets webhooks reach the operator's own network.
    webhooks: bool = False
    webhook_private_hosts: bool = False
    webhook_timeout: float = 10.0
    # The response cache (in memory): bytes it holds at most, seconds an answer is kept, and
    # whether one user may be answered from another's call (off: each their own entries).
    cache_bytes: int = 64 << 20
    cache_ttl: float = 600.0
    cache_shared: bool = False

    routing: Policy = "expected-wait"
    # Calls that find every node busy wait in a fair queue (docs/design.md): how long at most
    # (a client may ask for less with X-Max-Wait), how many in all and per user, and how
    # many places of each node's own short queue this gateway fills on top of its free slots.
    max_queue_wait: float = 60.0
    queue_limit: int = 1024
    queue_per_user: int = 64
    node_queue: int = 2

    def __post_init__(self) -> None:
        if self.routing not in POLICIES:
            raise ValueError(f"routing must be one of {', '.join(POLICIES)}, not {self.routing!r}")
        if self.registration not in ("open", "invite", "closed"):
            raise ValueError(
                f"registration must be open, invite or closed, not {self.registration!r}"
            )
        if self.session_ttl > self.max_token_ttl:
            raise ValueError("session_ttl may not be longer than max_token_ttl")
        if self.scrypt_n < 2**14:
            raise ValueError("scrypt_n below 16384 makes passwords cheap to guess")
        ScryptCost(self.scrypt_n)  # raises for a value scrypt cannot take
        if not 0 < self.max_queue_wait <= self.request_timeout:
            raise ValueError("max_queue_wait must be above 0 and at most request_timeout")
        if self.queue_limit < 1 or self.queue_per_user < 1 or self.node_queue < 0:
            raise ValueError("queue_limit and queue_per_user must be at least 1, node_queue 0")
        if self.jobs_running < 1:
            raise ValueError("jobs_running must be at least 1")
        if self.cache_bytes < 0 or self.cache_ttl < 0 or self.job_ttl <= 0:
            raise ValueError("cache_bytes and cache_ttl may not be negative, job_ttl must be > 0")

    @property
    def accounts_dir(self) -> Path:
        return self.database_dir or self.data_dir
