"""Typed configuration: defaults, then a TOML file, then ``BITINGLIP_*`` environment,
then only the command-line flags actually given."""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

from keys import default_data_dir

T = TypeVar("T")


@dataclasses.dataclass
class NodeConfig:
    data_dir: Path = dataclasses.field(default_factory=default_data_dir)
    listen: list[str] = dataclasses.field(default_factory=lambda: ["/ip4/0.0.0.0/tcp/4001"])
    bootstrap: list[str] = dataclasses.field(default_factory=list)
    models: list[str] = dataclasses.field(default_factory=list)
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


def _coerce(kind: Any, value: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin is list:
        return value.split(",") if isinstance(value, str) else list(value)
    if kind is Path or Path in typing.get_args(kind):
        return None if value in (None, "") else Path(value)
    inner = [a for a in typing.get_args(kind) if a is not type(None)]
    if type(None) in typing.get_args(kind) and len(inner) == 1:  # ``int | None`` and the like
        return None if value in (None, "") else _coerce(inner[0], value)
    if kind is bool and isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    for simple in (int, float, str):
        if kind is simple:
            return simple(value)
    return value


def load(cls: type[T], section: str, overrides: dict[str, Any], file: Path | None = None) -> T:
    """Build ``cls`` from defaults, ``[section]`` of a TOML file, environment, overrides."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    if file is not None and file.exists():
        with file.open("rb") as f:
            values.update(tomllib.load(f).get(section, {}))
    for name in hints:
        env = os.environ.get(f"BITINGLIP_{section.upper()}_{name.upper()}")
        if env is not None:
            values[name] = env
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - set(hints)
    if unknown:
        raise ValueError(f"unknown {section} settings: {', '.join(sorted(unknown))}")
    return cls(**{k: _coerce(hints[k], v) for k, v in values.items()})
