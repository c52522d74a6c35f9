"""msgpack encoding of plain values, with decoding hardened against peer input.

Decoding cost follows the number of objects, not bytes: 4 MiB of msgpack can hold four
million empty lists (seconds of CPU, hundreds of MB). So a decoded value may hold at most
``MAX_ITEMS`` elements in all its lists and maps together, nested at most ``MAX_DEPTH``
deep; the count is kept while msgpack builds each container, so a hostile value is
refused after at most ``MAX_ITEMS`` objects. The encoder checks the same limits, so we
never send what a peer of ours would refuse.
"""

from __future__ import annotations

from typing import Any

import msgpack

from protocols.errors import LocalProtocolError, RemoteProtocolError

# Well above any honest value (a 1 MiB chat request holds ~110,000 items at most).
MAX_ITEMS = 1 << 18
MAX_DEPTH = 32


class _TooLarge(ValueError):
    pass


def _shape_problem(value: Any) -> str | None:
    """Why ``value`` breaks the limits, or ``None``; a walk over its containers only."""
    items = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if not isinstance(container, list | tuple | dict):
            continue
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH}"
        children = container.values() if isinstance(container, dict) else container
        items += len(children) + 1
        if items > MAX_ITEMS:
            return f"more than {MAX_ITEMS} items"
        stack.extend((child, depth + 1) for child in children)
    return None


def pack(value: Any) -> bytes:
    """Encode a tree of dicts, lists, str, bytes, int, float, bool and None."""
    problem = _shape_problem(value)
    if problem:
        raise LocalProtocolError(f"cannot encode value: {problem}")
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode value: {exc}") from exc


class _Budget:
    """Counts the items of each container as msgpack completes it."""

    def __init__(self) -> None:
        self.left = MAX_ITEMS

    def _spend(self, size: int) -> None:
        self.left -= size + 1
        if self.left < 0:
            raise _TooLarge(f"more than {MAX_ITEMS} items")

    def on_list(self, value: list[Any]) -> list[Any]:
        self._spend(len(value))
        return value

    def on_map(self, value: dict[str, Any]) -> dict[str, Any]:
        self._spend(len(value))
        return value


def _no_ext(code: int, data: bytes) -> Any:
    raise _TooLarge(f"extension type {code} is not used here")


def unpack(data: bytes) -> Any:
    """Decode one msgpack value; anything malformed or over the limits is a
    ``RemoteProtocolError``."""
    budget = _Budget()
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            list_hook=budget.on_list,
            object_hook=budget.on_map,
            ext_hook=_no_ext,
            max_array_len=MAX_ITEMS,
            max_map_len=MAX_ITEMS,
        )
    except Exception as exc:  # msgpack raises many unrelated types on bad input
        raise RemoteProtocolError(f"malformed msgpack: {exc}") from exc
    # msgpack's own nesting limit is ~1,000; ours is lower, checked over at most MAX_ITEMS.
    problem = _shape_problem(value)
    if problem:
        raise RemoteProtocolError(f"malformed msgpack: {problem}")
    return value


def unpack_map(data: bytes) -> dict[str, Any]:
    """Decode a msgpack map with string keys."""
    value = unpack(data)
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise RemoteProtocolError("expected a map with string keys")
    return value
