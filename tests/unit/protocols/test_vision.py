"""The parameters of a chat with pictures: the parts and the pictures must agree."""

from __future__ import annotations

from typing import Any

import pytest

from protocols import RemoteProtocolError, VisionMessage, VisionParams
from protocols.vision import MAX_VISION_BYTES, image_format

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 20


def params(**changes: Any) -> VisionParams:
    base: dict[str, Any] = {
        "model": "looker",
        "messages": [
            VisionMessage("system", ["Be brief."]),
            VisionMessage("user", [0, "and", 1, "?"]),
        ],
        "images": [PNG, JPEG],
    }
    return VisionParams(**(base | changes))


def test_round_trip_and_text() -> None:
    made = params(max_tokens=7, temperature=0.5, stop=["."], seed=3, stream=False)
    assert VisionParams.from_wire(made.to_wire()) == made
    assert made.messages[1].text == "and?"


def test_image_format_by_signature() -> None:
    assert (image_format(PNG), image_format(JPEG), image_format(b"GIF89a")) == (
        "PNG",
        "JPEG",
        None,
    )


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"messages": []}, "messages must not be empty"),
        ({"messages": [VisionMessage("robot", ["hi"])], "images": []}, "roles must be one of"),
        ({"images": [PNG]}, "shown once, in order"),
        ({"images": [PNG, JPEG, PNG]}, "shown once, in order"),
        ({"messages": [VisionMessage("user", [1, 0])]}, "shown once, in order"),
        ({"images": [PNG, b"GIF89a"]}, "PNG or JPEG"),
        ({"images": [PNG, PNG + b"\x00" * MAX_VISION_BYTES]}, "bytes together"),
        ({"max_tokens": 0}, "max_tokens must be between"),
        ({"top_p": 0.0}, "top_p must be in"),
    ],
)
def test_refusals(changes: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        params(**changes)


def test_too_many_pictures() -> None:
    many = [PNG] * 9
    with pytest.raises(ValueError, match="at most 8 images"):
        params(messages=[VisionMessage("user", list(range(9)))], images=many)


@pytest.mark.parametrize(
    "changes",
    [
        {"images": ["not bytes"]},
        {"messages": [{"role": "user", "content": [0.5]}]},
        {"messages": [{"role": "user", "content": "text"}]},
        {"messages": [["user", "hi"]]},
        {"stream": "yes"},
    ],
)
def test_from_a_peer_is_typed_exactly(changes: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError, match="bad vision params"):
        VisionParams.from_wire(params().to_wire() | changes)
