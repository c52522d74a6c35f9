"""The msgpack codec: what it refuses to encode or decode, and what the errors say."""

from __future__ import annotations

import pytest

from protocols import LocalProtocolError, RemoteProtocolError
from protocols.codec import pack, unpack, unpack_map


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
    import msgpack

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
