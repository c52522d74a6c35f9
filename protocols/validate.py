"""The checks every value from a peer goes through before a dataclass holds it.

Peer input is never coerced (``bytes(2**64)`` would allocate, ``int(inf)`` would overflow):
a value has exactly the type its field declares (a bool is never an int) and numbers are
finite. Each check raises ``ValueError`` naming the field; code that reads the wire turns
it into a ``RemoteProtocolError``.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, fields
from typing import Any, TypeVar

T = TypeVar("T")

_SCALARS: dict[str, type] = {"str": str, "int": int, "bool": bool}
# How a refusal names each kind of value.
_NAMES: dict[type, str] = {
    str: "a string", int: "an integer", bool: "a boolean", bytes: "bytes", list: "a list",
    dict: "a map", float: "a number",
}  # fmt: skip


def exact(value: Any, kind: type[T], name: str) -> T:
    """``value`` if it is a ``kind`` (and not a bool standing in for a number)."""
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"{name} should be {_NAMES.get(kind, kind.__name__)}")
    return value


def required(body: dict[str, Any], name: str, kind: type[T]) -> T:
    """``body[name]``, which must be there and be a ``kind``."""
    if name not in body:
        raise ValueError(f"{name} is missing")
    return exact(body[name], kind, name)


def finite(value: Any, name: str) -> float:
    """``value`` as a float, if it is a finite int or float."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} should be a finite number")
    return float(value)


def flat(cls: type[T], body: Any) -> T:
    """A flat dataclass of scalars (str, int, float, bool) from a peer's map, each field
    checked against its annotation; a missing field takes its default, if it has one."""
    if not isinstance(body, dict):
        raise ValueError(f"{cls.__name__} should be a map")
    known = fields(cls)  # type: ignore[arg-type]
    unknown = set(body) - {f.name for f in known}
    if unknown:
        raise ValueError(
            f"{cls.__name__} has unknown fields: {', '.join(sorted(map(str, unknown)))}"
        )
    values: dict[str, Any] = {}
    for f in known:
        where = f"{cls.__name__}.{f.name}"
        if f.name not in body:
            if f.default is MISSING:
                raise ValueError(f"{where} is missing")
            continue
        value = body[f.name]
        kind = str(f.type)
        values[f.name] = (
            finite(value, where) if kind == "float" else exact(value, _SCALARS[kind], where)
        )
    return cls(**values)
