"""msgpack encoding of plain values, with decoding hardened against peer input."""

from __future__ import annotations

from typing import Any

import msgpack

from protocols.errors import LocalProtocolError, RemoteProtocolError


def pack(value: Any) -> bytes:
    """Encode a tree of dicts, lists, str, bytes, int, float, bool and None."""
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode value: {exc}") from exc


def unpack(data: bytes) -> Any:
    """Decode one msgpack value; anything malformed is a ``RemoteProtocolError``."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises many unrelated types on bad input
        raise RemoteProtocolError(f"malformed msgpack: {exc}") from exc


def unpack_map(data: bytes) -> dict[str, Any]:
    """Decode a msgpack map with string keys."""
    value = unpack(data)
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise RemoteProtocolError("expected a map with string keys")
    return value
