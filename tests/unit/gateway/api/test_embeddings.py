"""``/v1/embeddings`` in-process with a fake swarm: the input shapes, both encodings, what
is metered, and each bad input answered with a 400 naming it."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.api.app import create_app
from gateway.api.auth import Authenticator
from gateway.api.services import Services
from gateway.routing.dispatch import Wait
from gateway.routing.router import Embeddings, UnknownModel, UpstreamError
from protocols import EmbedParams, ErrorCode
from protocols.embedding import MAX_EMBED_INPUTS
from tests.unit.gateway.api.test_audio import AUTH, KEY, PEER, NoText
from tests.unit.gateway.api.test_http import http
from tests.unit.gateway.api.test_images import RecordingMeter


class Swarm(NoText):
    """``vectors`` embeds each input as [its index, its length, 0.5]; ``tokens`` reported."""

    def __init__(self, tokens: int = 7) -> None:
        self.asked: list[EmbedParams] = []
        self.waits: list[Wait | None] = []
        self.tokens = tokens

    def serving(self) -> dict[str, list[dict[str, Any]]]:
        return {"vectors": [{"peer_id": PEER, "state": "ready", "task": "embedding"}]}

    async def embed(
        self, params: EmbedParams, timeout: float, wait: Wait | None = None
    ) -> Embeddings:
        self.waits.append(wait)
        if params.model != "vectors":
            raise UnknownModel(params.model, ["vectors"])
        if params.dimensions == 2:
            raise UpstreamError(ErrorCode.BAD_REQUEST, "dimensions: vectors gives 3 only")
        self.asked.append(params)
        sizes = [len(t) for t in params.texts] or [len(t) for t in params.tokens]
        rows = [struct.pack("<3f", i, n, 0.5) for i, n in enumerate(sizes)]
        return Embeddings(PEER, rows, 3, self.tokens)


@pytest.fixture
def swarm() -> Swarm:
    return Swarm()


@pytest.fixture
def meter() -> RecordingMeter:
    return RecordingMeter()


@pytest.fixture
async def client(swarm: Swarm, meter: RecordingMeter) -> AsyncIterator[httpx.AsyncClient]:
    services = Services(
        backend=swarm, auth=Authenticator(KEY.public_key()), embeddings=swarm, meters=[meter]
    )
    async with http(create_app(services)) as c:
        yield c


async def embed(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/v1/embeddings", json={"model": "vectors"} | body, headers=AUTH)


async def test_a_list_of_strings_as_floats(
    client: httpx.AsyncClient, swarm: Swarm, meter: RecordingMeter
) -> None:
    response = await embed(client, input=["the cat", "a dog"], user="someone")
    assert response.status_code == 200, response.text
    assert response.headers["x-bitinglip-node"] == PEER
    body = response.json()
    assert (body["object"], body["model"]) == ("list", "vectors")
    assert body["data"] == [
        {"object": "embedding", "index": 0, "embedding": [0.0, 7.0, 0.5]},
        {"object": "embedding", "index": 1, "embedding": [1.0, 5.0, 0.5]},
    ]
    assert body["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    assert swarm.asked == [EmbedParams("vectors", ["the cat", "a dog"])]
    # It waits for a node as its caller, in the queue every call shares.
    assert [w.user if w else None for w in swarm.waits] == ["alice"]
    [outcome] = meter.outcomes
    assert (outcome.kind, outcome.prompt_tokens, outcome.peer_id) == ("embedding", 7, PEER)
    assert outcome.budget_tokens == len("the cat") + len("a dog") + 2 * 8


async def test_base64_is_little_endian_float32(client: httpx.AsyncClient) -> None:
    response = await embed(client, input="hello", encoding_format="base64")
    row = base64.b64decode(response.json()["data"][0]["embedding"])
    assert struct.unpack("<3f", row) == (0.0, 5.0, 0.5)


async def test_token_arrays_and_dimensions(client: httpx.AsyncClient, swarm: Swarm) -> None:
    assert (await embed(client, input=[1, 2, 3], dimensions=3)).status_code == 200
    assert (await embed(client, input=[[1, 2], [3]])).status_code == 200
    assert swarm.asked == [
        EmbedParams("vectors", tokens=[[1, 2, 3]], dimensions=3),
        EmbedParams("vectors", tokens=[[1, 2], [3]]),
    ]


async def test_a_node_cannot_charge_more_than_the_inputs_hold(
    client: httpx.AsyncClient, swarm: Swarm, meter: RecordingMeter
) -> None:
    swarm.tokens = 10_000
    response = await embed(client, input=[5, 6])
    assert response.json()["usage"]["prompt_tokens"] == 2
    assert meter.outcomes[0].prompt_tokens == 2


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"input": ""}, "input", "input[0] is an empty string"),
        ({"input": []}, "input", "input must not be empty"),
        ({"input": ["a", ""]}, "input", "input[1] is an empty string"),
        ({"input": ["a"] * (MAX_EMBED_INPUTS + 1)}, "input", f"at most {MAX_EMBED_INPUTS} items"),
        ({"input": ["x" * 40_000]}, "input", "input[0] is longer than 32768 characters"),
        ({"input": 3}, "input", "input must be a string, a list of strings"),
        ({"input": {"text": "a"}}, "input", "input must be a string"),
        ({"input": ["a", 1]}, "input", "input mixes strings, token ids and token arrays"),
        ({"input": ["a", None]}, "input", "input[1] is neither a string"),
        ({"input": [True]}, "input", "input[0] is neither a string"),
        ({"input": [[1], ["a"]]}, "input", "input[1] must be a list of token ids"),
        ({"input": [[1], []]}, "input", "input[1] is an empty token array"),
        ({"input": [-4]}, "input", "token id out of range"),
        ({}, "input", "input: Field required"),
        ({"input": "a", "dimensions": 0}, "dimensions", "dimensions: Input should be greater"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format", "encoding_format"),
        ({"input": "a", "model": ""}, "model", "model: String should have at least 1"),
    ],
)
async def test_bad_input_is_a_400_naming_it(
    client: httpx.AsyncClient, meter: RecordingMeter, body: dict[str, Any], param: str, words: str
) -> None:
    response = await embed(client, **body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"], error
    assert meter.outcomes == []  # refused before it was admitted


async def test_node_refusals_and_unknown_models(client: httpx.AsyncClient) -> None:
    refused = await embed(client, input="a", dimensions=2)
    assert refused.status_code == 400
    assert "dimensions: vectors gives 3 only" in refused.json()["error"]["message"]
    unknown = await embed(client, input="a", model="nope")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert (await client.post("/v1/embeddings", json={"model": "vectors"})).status_code == 401
