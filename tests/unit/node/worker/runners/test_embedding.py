"""The embedding runner on tiny random BERTs saved in sentence-transformers' layout, and the
node's ``embed``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from node.p2p.rpc_client import RemoteError
from node.worker.loading import load_runner, task_of
from node.worker.runners import ModelRunner, no_progress
from node.worker.runners.base import Embedder, GenerationCancelled, Runner
from node.worker.runners.embedding import EmbeddingRunner, Layout, UnsupportedModel
from protocols import EmbedParams, ErrorCode, Vectors
from protocols.embedding import floats
from protocols.operator import ModelSpec
from tests.tiny_models import EMBEDDING_CONTEXT, EMBEDDING_DIMENSIONS, build_tiny_sentence_bert
from tests.unit.node.worker.runners.test_image import CancelAfter, node

pytestmark = pytest.mark.slow


def load(path: Path) -> ModelRunner:
    return load_runner(ModelSpec(str(path)), path.parent, "cpu", no_progress, lambda _: None)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddingRunner]:
    torch.set_num_threads(1)
    path = build_tiny_sentence_bert(tmp_path_factory.mktemp("embed") / "bert", matryoshka=True)
    runner = load(path)
    assert isinstance(runner, EmbeddingRunner)
    yield runner
    runner.close()


def vectors(runner: Embedder, *texts: str, dimensions: int | None = None) -> np.ndarray:
    embedded = runner.embed(EmbedParams("m", list(texts), dimensions=dimensions), threading.Event())
    rows = [floats(row) for chunk in embedded.vectors for row in chunk.rows()]
    return np.array(rows)


def test_what_a_node_advertises(tiny: EmbeddingRunner, tmp_path: Path) -> None:
    assert isinstance(tiny, Embedder) and not isinstance(tiny, Runner)
    info = tiny.info
    assert (info.task, info.context_length, info.dimensions) == (
        "embedding",
        EMBEDDING_CONTEXT,
        EMBEDDING_DIMENSIONS,
    )
    assert info.matryoshka
    plain = build_tiny_sentence_bert(tmp_path / "plain")
    assert task_of(str(plain)) == "embedding"
    assert not Layout.read(plain).matryoshka


def test_vectors_are_normalised_batched_and_in_order(tiny: EmbeddingRunner) -> None:
    texts = ["the cat", "a big dog and a small bird in the tree", "red", "the cat"]
    got = vectors(tiny, *texts)
    assert got.shape == (4, EMBEDDING_DIMENSIONS)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # Batched with longer inputs, a text gets the vector it gets alone: padding is masked.
    assert np.allclose(got[0], vectors(tiny, "the cat")[0], atol=1e-5)
    assert np.allclose(got[0], got[3], atol=1e-6) and not np.allclose(got[0], got[2])
    # do_lower_case in sentence_bert_config.json: case does not matter.
    assert np.allclose(vectors(tiny, "THE Cat")[0], got[0], atol=1e-6)


def test_dimensions_truncate_and_renormalise(tiny: EmbeddingRunner) -> None:
    full = vectors(tiny, "the moon and the sun")[0]
    short = vectors(tiny, "the moon and the sun", dimensions=8)[0]
    assert short.shape == (8,)
    assert np.allclose(short, full[:8] / np.linalg.norm(full[:8]), atol=1e-5)
    assert np.allclose(vectors(tiny, "the moon", dimensions=EMBEDDING_DIMENSIONS)[0].shape, 32)
    with pytest.raises(ValueError, match="at most 32 dimensions"):
        vectors(tiny, "the moon", dimensions=64)


def test_dimensions_refused_where_the_model_was_not_trained_for_them(tmp_path: Path) -> None:
    runner = load(build_tiny_sentence_bert(tmp_path / "plain"))
    assert isinstance(runner, EmbeddingRunner)
    with pytest.raises(ValueError, match="not trained to be cut shorter"):
        vectors(runner, "the moon", dimensions=8)
    runner.close()


@pytest.mark.parametrize("pooling", ["cls", "max", "lasttoken"])
def test_each_pooling_mode(pooling: str, tmp_path: Path) -> None:
    runner = load(build_tiny_sentence_bert(tmp_path / pooling, pooling=pooling, normalize=False))
    assert isinstance(runner, EmbeddingRunner)
    got = vectors(runner, "the cat", "a big dog and a small bird")
    assert got.shape == (2, EMBEDDING_DIMENSIONS)
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0)  # no Normalize module
    assert np.allclose(got[0], vectors(runner, "the cat")[0], atol=1e-5)
    runner.close()


def test_a_chain_with_other_modules_is_refused(tmp_path: Path) -> None:
    path = build_tiny_sentence_bert(tmp_path / "dense")
    modules = json.loads((path / "modules.json").read_text())
    modules.append({"idx": 3, "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UnsupportedModel, match="Dense module is not supported"):
        Layout.read(path)
    pooling = path / "1_Pooling" / "config.json"
    (path / "modules.json").write_text(json.dumps(modules[:2]))
    both = json.loads(pooling.read_text()) | {"pooling_mode_cls_token": True}
    pooling.write_text(json.dumps(both))
    with pytest.raises(UnsupportedModel, match="pooling cls\\+mean is not supported"):
        Layout.read(path)


def test_inputs_the_model_cannot_read(tiny: EmbeddingRunner) -> None:
    with pytest.raises(ValueError, match=r"input\[1\] is 202 tokens but .* reads at most 64"):
        vectors(tiny, "the cat", " ".join(["dog"] * 200))
    with pytest.raises(ValueError, match=r"input\[0\] holds token id 5000"):
        tiny.embed(EmbedParams("m", tokens=[[2, 5000, 3]]), threading.Event())


def test_token_arrays_are_the_models_own_ids(tiny: EmbeddingRunner) -> None:
    ids = tiny._tokenizer("the cat")["input_ids"]
    by_ids = tiny.embed(EmbedParams("m", tokens=[list(ids)]), threading.Event())
    assert by_ids.tokens == len(ids)
    assert np.allclose(floats(by_ids.vectors[0].rows()[0]), vectors(tiny, "the cat")[0])


def test_cancellation_stops_between_batches(tiny: EmbeddingRunner) -> None:
    with pytest.raises(GenerationCancelled):
        tiny.embed(EmbedParams("m", ["the cat"]), CancelAfter(1))


async def test_embed_over_rpc_sends_vectors_in_chunks(tiny: EmbeddingRunner) -> None:
    async with node({"bert": tiny}) as (client, _):
        params = EmbedParams("bert", ["the cat", "the dog", "red"], dimensions=16)
        async with client.open_call("embed", params.to_wire()) as call:
            chunks = [Vectors.from_wire(chunk) async for chunk in call]
        assert sum(c.count for c in chunks) == 3 and chunks[0].dimensions == 16
        assert call.result is not None and call.result["dimensions"] == 16
        assert call.result["prompt_tokens"] == 4 + 4 + 3  # [CLS] and [SEP] around each
        with pytest.raises(RemoteError) as info:
            await client.call("embed", EmbedParams("bert", ["dog " * 100]).to_wire())
        assert info.value.code is ErrorCode.BAD_REQUEST and "reads at most" in info.value.message
        with pytest.raises(RemoteError) as info:
            await client.call(
                "generate", {"model": "bert", "prompt": "hi", "max_tokens": 3, "stop": []}
            )
        assert info.value.code is ErrorCode.MODEL_NOT_FOUND
