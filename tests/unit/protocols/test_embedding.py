"""The parameters and answers of embedding calls: caps, and peer input checked."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given

from protocols import EmbedParams, RemoteProtocolError, Vectors
from protocols.embedding import (
    MAX_EMBED_INPUT_CHARS,
    MAX_EMBED_INPUTS,
    MAX_EMBED_TOKENS,
    MAX_EMBED_TOTAL_CHARS,
    floats,
)
from tests.unit.protocols.test_hostile_input import near_misses, refused_only


def test_round_trip() -> None:
    for made in (
        EmbedParams("m", ["a", "b"], dimensions=8),
        EmbedParams("m", tokens=[[1, 2], [3]]),
    ):
        assert EmbedParams.from_wire(made.to_wire()) == made
        assert made.count == 2


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({}, "input must not be empty"),
        ({"texts": ["a"], "tokens": [[1]]}, "input must not be empty"),
        ({"texts": ["a", ""]}, r"input\[1\] is an empty string"),
        ({"texts": ["a"] * (MAX_EMBED_INPUTS + 1)}, f"at most {MAX_EMBED_INPUTS} items"),
        ({"texts": ["x" * (MAX_EMBED_INPUT_CHARS + 1)]}, r"input\[0\] is longer than"),
        (
            {"texts": ["x" * MAX_EMBED_INPUT_CHARS] * 25},
            f"{MAX_EMBED_TOTAL_CHARS} characters in all",
        ),
        ({"tokens": [[1], []]}, r"input\[1\] is an empty token array"),
        ({"tokens": [[1] * (MAX_EMBED_TOKENS + 1)]}, f"longer than {MAX_EMBED_TOKENS} tokens"),
        ({"tokens": [[-1]]}, "token id out of range"),
        ({"texts": ["a"], "dimensions": 0}, "dimensions must be between 1"),
    ],
)
def test_problems_are_named(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        EmbedParams("m", **changes)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "texts": "a", "tokens": []},
        {"model": "m", "texts": [1], "tokens": []},
        {"model": "m", "texts": [], "tokens": [[True]]},
        {"model": "m", "texts": [], "tokens": [[1.5]]},
        {"model": "m", "texts": ["a"], "tokens": [], "dimensions": "8"},
        {"model": "m", "texts": ["a"]},
        {"model": "m", "texts": [], "tokens": []},
    ],
)
def test_bad_peer_input_is_a_protocol_error(body: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError, match="bad embedding params"):
        EmbedParams.from_wire(body)


def test_vectors_are_whole_float32_rows() -> None:
    data = struct.pack("<6f", 1, 2, 3, 4, 5, 6)
    batch = Vectors.from_wire(Vectors(data, 2).to_wire())
    assert batch.dimensions == 3
    assert [floats(r) for r in batch.rows()] == [[1, 2, 3], [4, 5, 6]]
    for bad in ({"vectors": data, "count": 4}, {"vectors": data[:-1], "count": 1},
                {"vectors": data, "count": 0}, {"vectors": "x", "count": 1}):  # fmt: skip
        with pytest.raises(RemoteProtocolError, match="bad vectors"):
            Vectors.from_wire(bad)


@given(
    near_misses(EmbedParams("m", ["a", "b"], dimensions=8).to_wire())
    | near_misses(EmbedParams("m", tokens=[[1, 2]]).to_wire())
    | near_misses(Vectors(struct.pack("<2f", 1, 2), 1).to_wire())
)
def test_against_arbitrary_input(body: dict[str, Any]) -> None:
    # Only RemoteProtocolError may come out, as from every decoder in protocols/.
    refused_only(EmbedParams.from_wire, body)
    refused_only(Vectors.from_wire, body)
