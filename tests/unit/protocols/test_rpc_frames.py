"""RPC frame decoding: the exact reason each malformed frame is refused, and the edges of
ids and timeouts."""

from __future__ import annotations

from typing import Any

import pytest

from protocols import (
    MAX_REQUEST_ID,
    Cancel,
    Chunk,
    RemoteProtocolError,
    Request,
    decode,
    is_request_id,
)
from protocols.codec import pack


def refused(body: dict[str, Any]) -> str:
    with pytest.raises(RemoteProtocolError) as caught:
        decode(pack(body))
    return str(caught.value)


def _req(**changes: Any) -> dict[str, Any]:
    return {"t": "req", "id": 1, "m": "generate", "p": {}, "to": None} | changes


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_req(m=5), "m"),
        (_req(p=[]), "p"),
        ({"t": "hello", "cert": "text"}, "cert"),
        ({"t": "chunk", "id": 1}, "d"),
        ({"t": "end", "id": 1, "d": None}, "d"),
        ({"t": "err", "id": 1, "code": 3, "msg": "x"}, "code"),
        ({"t": "err", "id": 1, "code": "INTERNAL"}, "msg"),
        ({"t": "cancel"}, "id"),
        ({"t": "cancel", "id": True}, "id"),
        ({"t": "cancel", "id": 1.0}, "id"),
    ],
)
def test_a_missing_or_mistyped_field_is_named(body: dict[str, Any], field: str) -> None:
    assert refused(body) == f"field {field!r} is missing or has the wrong type"


@pytest.mark.parametrize("call_id", [-1, 2**63])
def test_ids_outside_sixty_three_bits_are_refused(call_id: int) -> None:
    assert refused({"t": "cancel", "id": call_id}) == "field 'id' is out of range"


@pytest.mark.parametrize("call_id", [0, 2**63 - 1])
def test_ids_at_the_edges_are_accepted(call_id: int) -> None:
    assert decode(pack({"t": "cancel", "id": call_id})) == Cancel(call_id)
    assert decode(pack({"t": "chunk", "id": call_id, "d": {}})) == Chunk(call_id, {})


@pytest.mark.parametrize("timeout", [0, -5, 1.5, "10", True])
def test_a_timeout_must_be_a_positive_integer(timeout: Any) -> None:
    assert refused(_req(to=timeout)) == "field 'to' must be a positive integer"


@pytest.mark.parametrize("timeout", [1, 2, None])
def test_small_positive_and_absent_timeouts_are_accepted(timeout: int | None) -> None:
    assert decode(pack(_req(to=timeout))) == Request(1, "generate", {}, timeout)


def test_a_request_without_a_timeout_field_has_none() -> None:
    body = _req()
    del body["to"]
    assert decode(pack(body)) == Request(1, "generate", {}, None)


def test_a_request_from_a_peer_without_request_ids_has_none() -> None:
    assert decode(pack(_req())) == Request(1, "generate", {}, None, request_id=None)


@pytest.mark.parametrize("rid", ["a", "0f3e-9c", "x" * MAX_REQUEST_ID, "A.b_c:d-1"])
def test_a_request_carries_a_safe_request_id(rid: str) -> None:
    assert decode(pack(_req(rid=rid))) == Request(1, "generate", {}, None, rid)


@pytest.mark.parametrize(
    "rid", ["", "x" * (MAX_REQUEST_ID + 1), "has space", 'q"uote', "line\nbreak", "é", 5, b"x"]
)
def test_a_request_id_that_is_not_safe_is_refused(rid: Any) -> None:
    assert not is_request_id(rid)
    assert refused(_req(rid=rid)) == "field 'rid' is not a request id"


@pytest.mark.parametrize("kind", ["query", None, 1])
def test_an_unknown_frame_type_is_named(kind: Any) -> None:
    assert refused({"t": kind, "id": 1}) == f"unknown frame type {kind!r}"
