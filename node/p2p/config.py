"""How every peer reads its typed configuration: defaults, then a TOML file, then
``BITINGLIP_*`` environment, then only the command-line flags actually given.

The config types live with their roles: ``node.worker.config.NodeConfig`` and
``gateway.config.GatewayConfig``."""

from __future__ import annotations

import os
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


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
