"""The msgpack codec: what it refuses to encode or decode, and what the errors say."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from protocols import LocalProtocolError, RemoteProtocolError
from protocols.codec import MAX_DEPTH, MAX_ITEMS, pack, unpack, unpack_map


def test_values_round_trip_with_bytes_and_str_kept_apart() -> None:
    value = {"s": "text", "b": b"\x00\xff", "l": [1, 2.5, None, True], "m": {"k": []}}
    assert unpack(pack(value)) == value
    assert type(unpack(pack(b"x"))) is bytes
    assert type(unpack(pack("x"))) is str


def test_unencodable_value_is_a_local_error_that_says_why() -> None:
    with pytest.raises(LocalProtocolError, match=r"^cannot encode value: .*object") as caught:
        pack(object())
    assert isinstance(caught.value.__cause__, TypeError)
    with pytest.raises(LocalProtocolError, match=r"^cannot encode value: "):
        pack(2**64)


def test_malformed_bytes_are_a_remote_error_that_says_so() -> None:
    with pytest.raises(RemoteProtocolError, match=r"^malformed msgpack: ") as caught:
        unpack(b"\xc1")  # a byte msgpack never uses
    assert caught.value.__cause__ is not None
    with pytest.raises(RemoteProtocolError, match=r"^malformed msgpack: "):
        unpack(pack("x") + b"trailing")


@pytest.mark.parametrize("key", [1, 2.5, None, (1, 2)], ids=["int", "float", "nil", "array"])
def test_maps_with_non_string_keys_are_refused_while_decoding(key: object) -> None:
    data = msgpack.packb({key: "v"}, use_bin_type=True)
    with pytest.raises(RemoteProtocolError, match=r"^malformed msgpack: "):
        unpack(data)


@pytest.mark.parametrize(
    "value", [[1, 2], "map", 3, None, {b"bytes key": 1}], ids=["list", "str", "int", "nil", "bytes"]
)
def test_unpack_map_wants_a_map_with_string_keys(value: object) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        unpack_map(pack(value))
    assert str(caught.value) == "expected a map with string keys"


def test_unpack_map_returns_the_map() -> None:
    assert unpack_map(pack({"a": 1, "b": [b"x"]})) == {"a": 1, "b": [b"x"]}
    assert unpack_map(pack({})) == {}


def _array_header(count: int) -> bytes:
    return b"\xdd" + count.to_bytes(4, "big")


def test_many_small_containers_are_refused_long_before_the_frame_ends() -> None:
    # 4 MiB of empty arrays would be four million lists (~1 s, ~300 MB) if decoded in full.
    count = 4 * 1024 * 1024 - 5
    hostile = _array_header(count) + b"\x90" * count
    with pytest.raises(RemoteProtocolError, match=r"^malformed msgpack: .*max_array_len"):
        unpack(hostile)
    # Nested, so that no single array is long: still refused, by the count of items.
    rows = 64
    row = _array_header(MAX_ITEMS // 16) + b"\x90" * (MAX_ITEMS // 16)
    nested = _array_header(rows) + row * rows
    with pytest.raises(RemoteProtocolError, match=rf"^malformed msgpack: more than {MAX_ITEMS}"):
        unpack(nested)


def test_maps_count_towards_the_same_limit() -> None:
    many: dict[str, Any] = {f"k{i}": {} for i in range(MAX_ITEMS // 2 + 1)}
    data = msgpack.packb(many)
    with pytest.raises(RemoteProtocolError, match=rf"more than {MAX_ITEMS} items"):
        unpack(data)


def test_nesting_is_limited() -> None:
    deep: Any = None
    for _ in range(MAX_DEPTH):
        deep = [deep]
    assert unpack(pack(deep)) == deep
    data = b"\x91" * (MAX_DEPTH + 1) + b"\xc0"
    with pytest.raises(RemoteProtocolError, match=r"^malformed msgpack: nested deeper than"):
        unpack(data)
    with pytest.raises(LocalProtocolError, match=rf"nested deeper than {MAX_DEPTH}"):
        pack([deep])


def test_values_at_the_item_limit_round_trip_and_the_encoder_refuses_more() -> None:
    full = [None] * (MAX_ITEMS - 1)
    assert unpack(pack(full)) == full
    with pytest.raises(LocalProtocolError, match=rf"^cannot encode value: more than {MAX_ITEMS}"):
        pack([*full, None])


def test_extension_types_are_refused() -> None:
    data = msgpack.packb(msgpack.ExtType(5, b"x"))
    with pytest.raises(RemoteProtocolError, match="extension type 5"):
        unpack(data)
