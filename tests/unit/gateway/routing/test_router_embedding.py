"""Embeddings across the swarm, and what the router says each model can do: the router over
in-memory node connections with torch-free models (real processes:
tests/integration/test_embeddings_swarm.py)."""

from __future__ import annotations

import struct
import threading

import pytest

from gateway.api.chat import model_entry
from gateway.routing.router import UnknownModel, UpstreamError
from node.worker.runners import EchoRunner
from node.worker.runners.base import Embedded
from protocols import EmbedParams, ErrorCode, Load, ModelInfo, Vectors
from tests.unit.gateway.routing.test_router import node, swarm_of


class Lines:
    """Embeds each text as [its length, 1, 2]; a ``liar`` drops the last vector."""

    def __init__(self, liar: bool = False, matryoshka: bool = False) -> None:
        self.liar = liar
        self.matryoshka = matryoshka

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            "lines", "embedding", "none", 64, 1, "ready", dimensions=3, matryoshka=self.matryoshka
        )

    def embed(self, params: EmbedParams, cancelled: threading.Event) -> Embedded:
        rows = [struct.pack("<3f", len(t), 1, 2) for t in params.texts]
        rows = rows[:-1] if self.liar else rows
        return Embedded([Vectors(b"".join(rows), len(rows))], 5)

    def close(self) -> None:
        pass


async def test_the_least_busy_node_embeds_in_input_order() -> None:
    async with swarm_of(
        {"peer-a": node({"lines": Lines()}), "peer-b": node({"lines": Lines()})}
    ) as router:
        router.table.update_load("peer-a", Load(3, 2, 1, 0.0, 0))
        made = await router.embed(EmbedParams("lines", ["a", "abc"]), 10)
    assert made.peer_id == "peer-b"
    assert [struct.unpack("<3f", r)[0] for r in made.rows] == [1.0, 3.0]
    assert (made.dimensions, made.prompt_tokens) == (3, 5)


async def test_a_malformed_answer_is_refused() -> None:
    async with swarm_of({"peer-a": node({"lines": Lines(liar=True)})}) as router:
        with pytest.raises(UpstreamError) as info:
            await router.embed(EmbedParams("lines", ["a", "abc"]), 10)
    assert info.value.code is ErrorCode.INTERNAL and "malformed" in str(info.value)


async def test_only_embedding_models_embed() -> None:
    async with swarm_of({"peer-a": node({"lines": Lines(), "echo": EchoRunner()})}) as router:
        with pytest.raises(UnknownModel) as info:
            await router.embed(EmbedParams("echo", ["a"]), 10)
    assert info.value.available == ["lines"]


async def test_models_say_what_they_can_do() -> None:
    nodes = {
        "peer-a": node({"lines": Lines(), "echo": EchoRunner()}),
        "peer-b": node({"lines": Lines(matryoshka=True)}),
    }
    async with swarm_of(nodes) as router:
        serving = router.serving()
    lines = model_entry("lines", serving["lines"])
    able = {name for name, yes in lines["capabilities"].items() if yes}
    # One of its peers can cut its vectors shorter: the model can.
    assert able == {"embeddings", "dimensions"}
    assert (lines["object"], lines["task"], lines["dimensions"]) == ("model", "embedding", 3)
    echo = model_entry("echo", serving["echo"])
    # An echo cannot hold its answer to a schema.
    assert {name for name, yes in echo["capabilities"].items() if yes} == {"chat", "completion"}
    assert "dimensions" not in echo


def test_capabilities_follow_the_task() -> None:
    def able(info: ModelInfo) -> set[str]:
        return {name for name, yes in info.capabilities().items() if yes}

    assert able(ModelInfo("t", "text-generation", "f", 1, 1, "ready")) == {"completion"}
    tools = ModelInfo(
        "t", "text-generation", "f", 1, 1, "ready", chat=True, tools=True, constrained=True
    )
    assert able(tools) == {"chat", "completion", "json", "tools"}
    assert able(ModelInfo("v", "image-to-text", "f", 1, 1, "ready")) == {"chat", "vision"}
    assert able(ModelInfo("s", "text-to-speech", "f", 1, 1, "ready")) == {"speech"}
    assert able(ModelInfo("w", "speech-to-text", "f", 1, 1, "ready")) == {"transcription"}
    assert able(ModelInfo("i", "text-to-image", "f", 1, 1, "ready")) == {"image"}
    # Tools or a template mean nothing for a model that does not write text.
    assert able(ModelInfo("e", "embedding", "f", 1, 1, "ready", tools=True)) == {"embeddings"}
