"""Generation parameters: every validation rule at its boundary, with the exact message the
caller reads, and how peers' maps are parsed (text and images)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from protocols import ChatMessage, GenerateParams, ImageParams, ImageStep, RemoteProtocolError
from protocols.generation import (
    IMAGE_SIDE_STEP,
    MAX_GUIDANCE,
    MAX_IMAGE_PROMPT_CHARS,
    MAX_IMAGE_SIDE,
    MAX_IMAGE_STEPS,
    MAX_IMAGES,
    MAX_SEED,
    MIN_IMAGE_SIDE,
    side_problem,
)

# --- text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give exactly one of messages or prompt"),
        ({"prompt": "x", "messages": [ChatMessage("user", "x")]}, "give exactly one of"),
        ({"messages": []}, "messages must not be empty"),
        (
            {"messages": [ChatMessage("user", "x"), ChatMessage("robot", "x")]},
            "message roles must be one of system, user, assistant, tool",
        ),
        ({"prompt": "x" * 200_001}, "prompt is longer than 200000 characters"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens must be between 1 and 8192"),
        ({"prompt": "x", "max_tokens": 8193}, "max_tokens must be between 1 and 8192"),
        ({"prompt": "x", "temperature": 2.5}, "temperature must be between 0 and 2"),
        ({"prompt": "x", "temperature": -0.5}, "temperature must be between 0 and 2"),
        ({"prompt": "x", "top_p": 0.0}, "top_p must be in (0, 1]"),
        ({"prompt": "x", "stop": ["a", ""]}, "stop takes at most 4 non-empty strings"),
        ({"prompt": "x", "stop": ["a"] * 5}, "stop takes at most 4 non-empty strings"),
    ],
)
def test_generate_params_say_exactly_what_is_wrong(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        GenerateParams(model="m", **kwargs)
    assert str(caught.value).startswith(message)


def test_prompt_chars_count_every_message_or_the_prompt() -> None:
    messages = [ChatMessage("system", "abc"), ChatMessage("user", "de")]
    assert GenerateParams(model="m", messages=messages).prompt_chars() == 5
    assert GenerateParams(model="m", prompt="four").prompt_chars() == 4


def test_message_lengths_add_up_against_the_cap() -> None:
    half = "x" * 100_000
    GenerateParams(model="m", messages=[ChatMessage("user", half), ChatMessage("user", half)])
    with pytest.raises(ValueError, match="longer than"):
        GenerateParams(
            model="m", messages=[ChatMessage("user", half), ChatMessage("user", half + "x")]
        )


def _wire(**changes: Any) -> dict[str, Any]:
    return GenerateParams(model="m", prompt="hi").to_wire() | changes


def test_the_wire_form_is_every_field() -> None:
    assert GenerateParams(model="m", prompt="hi", stream=False).to_wire() == {
        "model": "m",
        "messages": None,
        "prompt": "hi",
        "max_tokens": 256,
        "temperature": None,
        "top_p": None,
        "stop": [],
        "seed": None,
        "stream": False,
        "tools": [],
        "tool_choice": "auto",
        "tool_name": None,
        "parallel_tool_calls": True,
        "response_format": "text",
        "json_schema": None,
        "logprobs": False,
        "top_logprobs": 0,
    }


@pytest.mark.parametrize("stream", [True, False])
def test_stream_travels_over_the_wire(stream: bool) -> None:
    assert GenerateParams.from_wire(_wire(stream=stream)).stream is stream


def test_a_peer_that_omits_stream_wants_a_stream() -> None:
    body = _wire()
    del body["stream"]
    assert GenerateParams.from_wire(body).stream is True
    assert GenerateParams.from_wire(_wire(stream=None)).stream is True


@pytest.mark.parametrize("stream", [1, "yes", 0])
def test_stream_must_be_a_boolean(stream: Any) -> None:
    with pytest.raises(
        RemoteProtocolError, match=r"^bad generate params: stream should be a boolean$"
    ):
        GenerateParams.from_wire(_wire(stream=stream))


def test_from_wire_errors_name_the_field() -> None:
    with pytest.raises(
        RemoteProtocolError,
        match=r"^bad generate params: max_tokens should be an integer$",
    ):
        GenerateParams.from_wire(_wire(max_tokens="5"))
    with pytest.raises(
        RemoteProtocolError, match=r"^bad generate params: stop should be a string$"
    ):
        GenerateParams.from_wire(_wire(stop=[1]))
    with pytest.raises(
        RemoteProtocolError, match=r"^bad generate params: max_tokens must be between 1 and 8192$"
    ):
        GenerateParams.from_wire(_wire(max_tokens=0))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prompt": None, "messages": "hi"}, "messages should be a list"),
        ({"prompt": None, "messages": [["user", "hi"]]}, "message should be a map"),
        ({"prompt": None, "messages": [{"role": "user"}]}, "content is missing"),
        ({"prompt": None, "messages": [{"content": "hi"}]}, "role is missing"),
        ({"prompt": 3}, "prompt should be a string"),
        ({"temperature": "1"}, "temperature should be a finite number"),
        ({"temperature": float("inf")}, "temperature should be a finite number"),
        ({"top_p": "0.9"}, "top_p should be a finite number"),
        ({"top_p": True}, "top_p should be a finite number"),
        ({"seed": "9"}, "seed should be an integer"),
        ({"seed": 1.0}, "seed should be an integer"),
    ],
)
def test_generate_from_wire_refuses_with_the_reason(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        GenerateParams.from_wire(_wire(**changes))
    assert str(caught.value) == f"bad generate params: {message}"


def test_from_wire_reads_messages_seed_and_integer_numbers() -> None:
    body = _wire(
        prompt=None,
        messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
        seed=9,
        temperature=1,
        top_p=1,
        stop=["\n"],
    )
    params = GenerateParams.from_wire(body)
    assert params.messages == [ChatMessage("system", "s"), ChatMessage("user", "u")]
    assert params.prompt is None
    assert params.seed == 9
    assert params.stop == ["\n"]
    assert type(params.temperature) is float and type(params.top_p) is float


# --- images -------------------------------------------------------------------------------


def image(**changes: Any) -> ImageParams:
    return ImageParams(**({"model": "sd", "prompt": "a cat"} | changes))


def test_image_defaults() -> None:
    params = image()
    assert (params.n, params.width, params.height, params.steps) == (1, 512, 512, 30)
    assert (params.guidance, params.seed) == (7.5, None)


@pytest.mark.parametrize(
    "changes",
    [
        {"prompt": "x"},
        {"prompt": "x" * MAX_IMAGE_PROMPT_CHARS},
        {"n": 1},
        {"n": MAX_IMAGES},
        {"width": MIN_IMAGE_SIDE, "height": MAX_IMAGE_SIDE},
        {"width": MAX_IMAGE_SIDE, "height": MIN_IMAGE_SIDE},
        {"steps": 1},
        {"steps": MAX_IMAGE_STEPS},
        {"guidance": 0.0},
        {"guidance": MAX_GUIDANCE},
        {"seed": 0},
        {"seed": MAX_SEED},
    ],
    ids=lambda c: ",".join(f"{k}={str(v)[:8]}" for k, v in c.items()),
)
def test_image_params_accept_the_edges(changes: dict[str, Any]) -> None:
    params = image(**changes)
    for name, value in changes.items():
        assert getattr(params, name) == value


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prompt": ""}, "prompt must not be empty"),
        ({"prompt": "x" * 4001}, "prompt is longer than 4000 characters"),
        ({"negative_prompt": "x" * 4001}, "negative_prompt is longer than 4000 characters"),
        ({"n": 0}, "n must be between 1 and 4"),
        ({"n": 5}, "n must be between 1 and 4"),
        ({"width": 56}, "width must be a multiple of 8 between 64 and 1024"),
        ({"width": 1032}, "width must be a multiple of 8 between 64 and 1024"),
        ({"width": 516}, "width must be a multiple of 8 between 64 and 1024"),
        ({"height": 56}, "height must be a multiple of 8 between 64 and 1024"),
        ({"height": 1025}, "height must be a multiple of 8 between 64 and 1024"),
        ({"steps": 0}, "steps must be between 1 and 100"),
        ({"steps": 101}, "steps must be between 1 and 100"),
        ({"guidance": -0.5}, "guidance must be between 0 and 30"),
        ({"guidance": 30.5}, "guidance must be between 0 and 30"),
        ({"seed": -1}, f"seed must be between 0 and {MAX_SEED}"),
        ({"seed": MAX_SEED + 1}, f"seed must be between 0 and {MAX_SEED}"),
    ],
)
def test_image_params_say_exactly_what_is_wrong(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        image(**changes)
    assert str(caught.value) == message


def test_width_is_checked_before_height() -> None:
    with pytest.raises(ValueError, match=r"^width "):
        image(width=1, height=1)


@pytest.mark.parametrize(
    ("side", "ok"),
    [
        (MIN_IMAGE_SIDE - IMAGE_SIDE_STEP, False),
        (MIN_IMAGE_SIDE, True),
        (MIN_IMAGE_SIDE + 1, False),
        (MIN_IMAGE_SIDE + IMAGE_SIDE_STEP, True),
        (MAX_IMAGE_SIDE, True),
        (MAX_IMAGE_SIDE + IMAGE_SIDE_STEP, False),
    ],
)
def test_side_problem(side: int, ok: bool) -> None:
    assert (side_problem(side) is None) is ok


def test_image_params_round_trip_through_the_wire() -> None:
    params = image(n=2, width=768, height=64, steps=4, guidance=1, seed=11, negative_prompt="dog")
    assert params.to_wire() == {
        "model": "sd",
        "prompt": "a cat",
        "n": 2,
        "width": 768,
        "height": 64,
        "steps": 4,
        "guidance": 1,
        "seed": 11,
        "negative_prompt": "dog",
        "progress": False,
    }
    back = ImageParams.from_wire(params.to_wire())
    assert back == params
    assert type(back.guidance) is float


def test_image_from_wire_without_a_seed() -> None:
    body = image().to_wire()
    del body["seed"]
    assert ImageParams.from_wire(body).seed is None


def test_image_from_wire_of_an_older_gateway_has_no_negative_prompt() -> None:
    body = image().to_wire()
    del body["negative_prompt"]
    assert ImageParams.from_wire(body).negative_prompt == ""


def test_image_from_wire_of_an_older_gateway_asks_for_no_progress() -> None:
    body = image(progress=True).to_wire()
    assert ImageParams.from_wire(body).progress is True
    del body["progress"]
    assert ImageParams.from_wire(body).progress is False


def test_image_steps_round_trip() -> None:
    assert ImageStep.from_wire(ImageStep(3, 20).to_wire()) == ImageStep(3, 20)
    assert ImageStep.from_wire({"step": 1, "steps": 1}) == ImageStep(1, 1)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"steps": 20}, "step is missing"),
        ({"step": 1}, "steps is missing"),
        ({"step": True, "steps": 20}, "step should be an integer"),
        ({"step": 1, "steps": 2.0}, "steps should be an integer"),
        ({"step": 0, "steps": 20}, "step 0 of 20 is out of range"),
        ({"step": 21, "steps": 20}, "step 21 of 20 is out of range"),
        ({"step": 1, "steps": 10**9}, f"step 1 of {10**9} is out of range"),
    ],
)
def test_image_steps_refuse_what_no_node_could_mean(body: dict[str, Any], message: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        ImageStep.from_wire(body)
    assert str(caught.value) == f"bad image step: {message}"


def _image_wire(**changes: Any) -> dict[str, Any]:
    return image().to_wire() | changes


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_image_wire(model=None), "model should be a string"),
        (_image_wire(prompt=b"cat"), "prompt should be a string"),
        (_image_wire(n="2"), "n should be an integer"),
        (_image_wire(n=True), "n should be an integer"),
        (_image_wire(width=512.0), "width should be an integer"),
        (_image_wire(height=None), "height should be an integer"),
        (_image_wire(steps=[30]), "steps should be an integer"),
        (_image_wire(guidance="7"), "guidance should be a finite number"),
        (_image_wire(guidance=False), "guidance should be a finite number"),
        (_image_wire(seed="1"), "seed should be an integer"),
        (_image_wire(seed=True), "seed should be an integer"),
        (_image_wire(negative_prompt=None), "negative_prompt should be a string"),
        (_image_wire(progress=1), "progress should be a boolean"),
        (_image_wire(n=9), "n must be between 1 and 4"),
        (_image_wire(guidance=10**400), "int too large to convert to float"),
    ],
)
def test_image_from_wire_refuses_with_the_reason(body: dict[str, Any], message: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        ImageParams.from_wire(body)
    assert str(caught.value) == f"bad image params: {message}"


@pytest.mark.parametrize("body", [None, [], "params"])
def test_image_from_wire_refuses_non_maps(body: Any) -> None:
    with pytest.raises(
        RemoteProtocolError, match=re.escape("bad image params: params should be a map")
    ):
        ImageParams.from_wire(body)
