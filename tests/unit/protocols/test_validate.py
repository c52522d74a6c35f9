"""The checks every value from a peer goes through: exact types, required fields, finite
numbers and flat dataclasses, each refusal naming the field and what it should be."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest

from protocols.validate import exact, finite, flat, required


@dataclass(frozen=True)
class Shape:
    """One field of each kind, every one with a default."""

    label: str = "none"
    sides: int = 0
    area: float = 0.0
    name: str = ""
    closed: bool = False


@dataclass(frozen=True)
class Pin:
    colour: str = "red"
    x: int = 0
    y: int = 0
    at: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Late:
    """A field with a default, then one without."""

    note: str = ""
    must: int


def test_exact_returns_the_value_of_the_right_type() -> None:
    assert exact("a", str, "name") == "a"
    assert exact(3, int, "n") == 3
    assert exact(False, bool, "flag") is False
    assert exact(b"\x00", bytes, "blob") == b"\x00"


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        (1, str, "name should be a string"),
        ("1", int, "name should be an integer"),
        (True, int, "name should be an integer"),
        (1, bool, "name should be a boolean"),
        ("ab", bytes, "name should be bytes"),
        ((1,), list, "name should be a list"),
        ([], dict, "name should be a map"),
        (1, float, "name should be a number"),
        ([1], tuple, "name should be tuple"),
        ([1], frozenset, "name should be frozenset"),
    ],
)
def test_exact_names_the_field_and_the_type_it_wants(value: Any, kind: type, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        exact(value, kind, "name")
    assert str(caught.value) == message


def test_required_needs_the_field_there_and_of_its_type() -> None:
    assert required({"model": "m"}, "model", str) == "m"
    with pytest.raises(ValueError) as caught:
        required({"other": "m"}, "model", str)
    assert str(caught.value) == "model is missing"
    with pytest.raises(ValueError) as caught:
        required({"model": None}, "model", str)
    assert str(caught.value) == "model should be a string"


@pytest.mark.parametrize("value", [0, -3, 2.5, 10**300])
def test_finite_gives_a_float(value: float) -> None:
    assert finite(value, "x") == float(value)
    assert type(finite(value, "x")) is float


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, True, "1", None])
def test_finite_refuses_everything_else(value: Any) -> None:
    with pytest.raises(ValueError) as caught:
        finite(value, "x")
    assert str(caught.value) == "x should be a finite number"


def test_flat_checks_each_field_against_its_annotation() -> None:
    body = {"label": "sq", "sides": 4, "area": 2, "name": "square", "closed": True}
    shape = flat(Shape, body)
    assert shape == Shape("sq", 4, 2.0, "square", True)
    assert type(shape.area) is float


def test_flat_fills_missing_fields_with_their_defaults_and_reads_the_rest() -> None:
    # The missing fields come first: the fields after them must still be read.
    assert flat(Shape, {"closed": True}) == Shape(closed=True)
    assert flat(Shape, {"label": "a", "closed": True}) == Shape(label="a", closed=True)
    assert flat(Pin, {"y": 5}) == Pin(y=5)


def test_flat_still_requires_a_field_without_a_default_after_a_missing_one() -> None:
    assert flat(Late, {"must": 2}) == Late(must=2)
    with pytest.raises(ValueError) as caught:
        flat(Late, {})
    assert str(caught.value) == "Late.must is missing"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"sides": "4"}, "Shape.sides should be an integer"),
        ({"sides": True}, "Shape.sides should be an integer"),
        ({"area": math.nan}, "Shape.area should be a finite number"),
        ({"label": 1}, "Shape.label should be a string"),
        ({"closed": 0}, "Shape.closed should be a boolean"),
    ],
)
def test_flat_names_a_mistyped_field(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        flat(Shape, body)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"colour": "blue", "z": 1}, "Pin has unknown fields: z"),
        ({"zeta": 1, "alpha": 2, "x": 3}, "Pin has unknown fields: alpha, zeta"),
        ({"b": 1, 7: 2, "a": 3}, "Pin has unknown fields: 7, a, b"),
    ],
)
def test_flat_refuses_unknown_fields_naming_them_in_order(
    body: dict[Any, Any], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        flat(Pin, body)
    assert str(caught.value) == message


@pytest.mark.parametrize("body", [None, [], "x", 3])
def test_flat_wants_a_map(body: Any) -> None:
    with pytest.raises(ValueError) as caught:
        flat(Pin, body)
    assert str(caught.value) == "Pin should be a map"
