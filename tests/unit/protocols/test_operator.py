"""The operator's requests to a node: a model spec (also a config table) and an unload."""

from __future__ import annotations

from typing import Any

import pytest

from protocols import RemoteProtocolError
from protocols.operator import ModelSpec, Unload


def test_a_spec_round_trips_and_defaults_to_automatic() -> None:
    spec = ModelSpec("owner/model", "bfloat16", 8, "cuda:1")
    assert ModelSpec.from_wire(spec.to_wire()) == spec
    assert ModelSpec.from_wire({"id": "m"}) == ModelSpec("m", "", 0, "")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "id is missing"),
        ({"id": ""}, "a model id is 1 to 512 characters"),
        ({"id": "m" * 513}, "a model id is 1 to 512 characters"),
        ({"id": "m", "dtype": "int4"}, "dtype 'int4' is not one of float32, float16, bfloat16"),
        ({"id": "m", "slots": -1}, "slots should be between 0 (automatic) and 1024"),
        ({"id": "m", "slots": 1025}, "slots should be between 0 (automatic) and 1024"),
        ({"id": "m", "slots": True}, "slots should be an integer"),
        ({"id": "m", "slots": 2.0}, "slots should be an integer"),
        ({"id": 7}, "id should be a string"),
        ({"id": "m", "device": 0}, "device should be a string"),
        ({"id": "m", "gpu": 1}, "unknown model settings: gpu"),
        ([], "params should be a map"),
    ],
)
def test_a_bad_spec_is_refused_with_the_reason(body: Any, message: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        ModelSpec.from_wire(body)
    assert str(caught.value) == f"bad model spec: {message}"


def test_an_unload_round_trips_with_a_bounded_timeout() -> None:
    assert Unload.from_wire(Unload("m", 2.5).to_wire()) == Unload("m", 2.5)
    assert Unload.from_wire({"model": "m"}) == Unload("m", 30.0)
    for body, message in [
        ({}, "model is missing"),
        ({"model": "m", "timeout": -1}, "timeout should be between 0 and 3600 s"),
        ({"model": "m", "timeout": float("inf")}, "timeout should be a finite number"),
        ({"model": "m", "now": True}, "unknown fields: now"),
    ]:
        with pytest.raises(RemoteProtocolError) as caught:
            Unload.from_wire(body)
        assert str(caught.value) == f"bad unload request: {message}"
