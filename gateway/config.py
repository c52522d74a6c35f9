"""A gateway's settings: ``[gateway]`` in a TOML file, then ``BITINGLIP_GATEWAY_*``, then flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from keys import default_data_dir


@dataclasses.dataclass
class GatewayConfig:
    data_dir: Path = dataclasses.field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8080
    listen: list[str] = dataclasses.field(default_factory=lambda: ["/ip4/0.0.0.0/tcp/4002"])
    bootstrap: list[str] = dataclasses.field(default_factory=list)
    max_body_bytes: int = 1 << 20  # every request body, chats with pictures included
    max_upload_bytes: int = 25 << 20  # an audio file to transcribe or translate
    max_audio_seconds: float = 1800.0  # the longest audio transcribed in one call
    # Whether pictures in chats may be http(s) URLs the gateway fetches (only public hosts,
    # each within image_fetch_timeout seconds); off: data URLs only.
    fetch_image_urls: bool = False
    image_fetch_timeout: float = 10.0
    request_timeout: float = 300.0
    ready_file: Path | None = None
    log_level: str = "info"
    # [gateway.plans.<name>] tables: requests_per_minute, tokens_per_day, images_per_day,
    # concurrent. A plan called "default" is built in (60, 200000, 100, 4) and may be redefined.
    plans: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    default_plan: str = "default"  # the plan new users get
    registration: bool = True  # whether anyone may register at POST /v1/auth/register
    session_ttl: float = 86400.0  # seconds a login token lives
