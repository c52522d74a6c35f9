"""Embeddings through a real gateway and node process, asked for with the ``openai`` client.

One swarm serves the module: one node holding two tiny random BERTs in sentence-transformers'
layout, one trained (as its model card says) to be cut shorter and one not, each loaded
from its directory through ``from_pretrained``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import openai
import pytest

from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_media_swarm import wait_tasks
from tests.integration.test_peers_cli import peers
from tests.tiny_models import EMBEDDING_CONTEXT, EMBEDDING_DIMENSIONS, build_tiny_sentence_bert


@dataclass(frozen=True)
class Embedding:
    swarm: LocalSwarmFixture
    matryoshka: str
    plain: str

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.swarm.url()}/v1", api_key=self.swarm.token(), max_retries=0
        )

    def post(self, body: dict[str, object]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.swarm.token()}"}
        return httpx.post(f"{self.swarm.url()}/v1/embeddings", json=body, headers=headers)


@pytest.fixture(scope="module")
def embedding(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedding]:
    base = tmp_path_factory.mktemp("embedding")
    made = Embedding(
        LocalSwarmFixture(base / "swarm"),
        str(build_tiny_sentence_bert(base / "tiny-matryoshka", matryoshka=True)),
        str(build_tiny_sentence_bert(base / "tiny-plain", pooling="cls")),
    )
    try:
        made.swarm.start_gateway()
        made.swarm.start_node("node-0", [made.swarm.addr("gateway")], [made.matryoshka, made.plain])
        made.swarm.wait_ready(["node-0"])
        tasks = {made.matryoshka: "embedding", made.plain: "embedding"}
        wait_tasks(made.swarm.url(), made.swarm.token(), tasks)
        yield made
    finally:
        made.swarm.local.stop()


def test_a_list_of_texts_as_floats_and_as_base64(embedding: Embedding) -> None:
    client = embedding.client()
    texts = ["the cat is on the tree", "a big red car", "the cat is on the tree"]
    floats = client.embeddings.create(
        model=embedding.matryoshka, input=texts, encoding_format="float", user="someone"
    )
    vectors = np.array([d.embedding for d in floats.data])
    assert [d.index for d in floats.data] == [0, 1, 2]
    assert vectors.shape == (3, EMBEDDING_DIMENSIONS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[0], vectors[2]) and not np.allclose(vectors[0], vectors[1])
    assert floats.usage.prompt_tokens == 8 + 6 + 8  # [CLS] and [SEP] around each
    # Without encoding_format the package asks for base64 and decodes it itself.
    decoded = client.embeddings.create(model=embedding.matryoshka, input=texts)
    assert np.array_equal(np.array([d.embedding for d in decoded.data]), vectors.astype("<f4"))
    raw = client.embeddings.create(
        model=embedding.matryoshka, input="a big red car", encoding_format="base64"
    )
    packed = base64.b64decode(str(raw.data[0].embedding))
    assert np.array_equal(np.frombuffer(packed, "<f4"), vectors[1].astype("<f4"))


def test_token_arrays_and_shorter_vectors(embedding: Embedding) -> None:
    client = embedding.client()
    short = client.embeddings.create(
        model=embedding.matryoshka, input=[[2, 10, 11, 3], [2, 12, 3]], dimensions=8
    )
    assert [len(d.embedding) for d in short.data] == [8, 8]
    assert np.allclose(np.linalg.norm(short.data[0].embedding), 1.0, atol=1e-5)
    assert short.usage.prompt_tokens == 7
    with pytest.raises(openai.BadRequestError, match="not trained to be cut shorter"):
        client.embeddings.create(model=embedding.plain, input="the cat", dimensions=8)
    full = client.embeddings.create(model=embedding.plain, input="the cat")
    assert len(full.data[0].embedding) == EMBEDDING_DIMENSIONS


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"input": ""}, "input[0] is an empty string"),
        ({"input": []}, "input must not be empty"),
        ({"input": ["the cat"] * 257}, "at most 256 items"),
        ({"input": " ".join(["dog"] * 100)}, f"reads at most {EMBEDDING_CONTEXT}"),
        ({"input": [[2, 99999, 3]]}, "beyond"),
        ({"input": {"text": "the cat"}}, "input must be a string, a list of strings"),
        ({"input": ["the cat", 3]}, "input mixes strings"),
    ],
)
def test_bad_input_is_a_400_naming_it(
    embedding: Embedding, body: dict[str, object], words: str
) -> None:
    response = embedding.post({"model": embedding.matryoshka} | body)
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]["message"]


def test_listed_metered_and_counted(embedding: Embedding) -> None:
    swarm = embedding.swarm
    token = swarm.token("counted")
    headers = {"Authorization": f"Bearer {token}"}
    body = {"model": embedding.plain, "input": ["the cat", "red"]}
    answered = httpx.post(f"{swarm.url()}/v1/embeddings", json=body, headers=headers)
    assert answered.headers["x-bitinglip-node"] == swarm.peer_id("node-0")
    usage = httpx.get(f"{swarm.url()}/v1/usage", headers=headers).json()
    assert usage["totals"]["prompt_tokens"] == 4 + 3 and usage["totals"]["requests"] == 1
    metrics = httpx.get(f"{swarm.url()}/metrics").text
    assert 'kind="embedding"' in metrics
    listed = httpx.get(f"{swarm.url()}/v1/models", headers=headers).json()["data"]
    assert {m["id"]: m["task"] for m in listed} == {
        embedding.matryoshka: "embedding",
        embedding.plain: "embedding",
    }
    able = {m["id"]: {k for k, v in m["capabilities"].items() if v} for m in listed}
    assert able == {
        embedding.matryoshka: {"embeddings", "dimensions"},
        embedding.plain: {"embeddings"},
    }
    assert {m["dimensions"] for m in listed} == {EMBEDDING_DIMENSIONS}
    shown = peers("--gateway", swarm.url(), "--token", token, "--json")
    assert shown.returncode == 0, shown.stderr
    [node] = [p for p in json.loads(shown.stdout)["peers"] if p["role"] == "node"]
    assert {m["task"] for m in node["models"]} == {"embedding"}
