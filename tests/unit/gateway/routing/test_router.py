"""Image generation across the swarm: the router over in-memory node connections
(real processes: tests/integration/test_images_swarm.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import cast

import pytest
import trio
import trio.testing

from gateway.routing.peer_table import PeerTable
from gateway.routing.router import NoPeerReady, Router, UnknownModel, UpstreamError
from gateway.routing.tracker import Tracker
from node.p2p.rpc_client import RpcClient
from node.p2p.rpc_server import Caller, RpcServer
from node.p2p.streams import TrioByteStream
from node.worker.handlers import NodeService
from node.worker.roster import Roster
from node.worker.runners import EchoRunner, ModelRunner
from node.worker.runners.base import Steps, no_steps
from protocols import (
    ErrorCode,
    GenerateParams,
    Hardware,
    ImageParams,
    ImageStep,
    Load,
    ModelInfo,
    NodeRecord,
)


class Squares:
    """A torch-free image model; ``short`` makes it return one image too few."""

    def __init__(self, model_id: str = "pics", short: bool = False) -> None:
        self.model_id = model_id
        self.short = short
        self.calls = 0

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self.model_id, "text-to-image", "none", 77, 1, "ready")

    def generate_images(
        self, params: ImageParams, cancelled: threading.Event, steps: Steps = no_steps
    ) -> list[bytes]:
        self.calls += 1
        for step in range(1, params.steps + 1):
            steps(step, params.steps)
        return [b"png-%d" % i for i in range(params.n - self.short)]

    def close(self) -> None:
        pass


class FakeTracker:
    """What the router needs of a tracker: a client per connected node."""

    def __init__(self) -> None:
        self.clients: dict[str, RpcClient] = {}

    async def find_model(self, model: str) -> None:
        pass


def record(peer: str, models: list[ModelInfo]) -> NodeRecord:
    return NodeRecord(
        peer_id=peer,
        public_key=b"",
        role="node",
        version="test",
        addrs=[],
        hardware=Hardware("cpu", "test", "RAM", 0, 0),
        models=models,
        load=Load(0, 0, 1, 0.0, 0),
        seq=1,
        issued_at=time.time(),
        ttl=60.0,
    )


@asynccontextmanager
async def swarm_of(nodes: dict[str, NodeService]) -> AsyncIterator[Router]:
    """A router whose table lists ``nodes``, each reached over an in-memory stream."""
    table, tracker = PeerTable(), FakeTracker()
    async with trio.open_nursery() as nursery:
        for peer, service in nodes.items():
            left, right = trio.testing.memory_stream_pair()
            server = RpcServer(service.handlers, lambda cert, peer: Caller(peer, "gateway"))
            nursery.start_soon(server.serve, TrioByteStream(right), "gateway")
            client = RpcClient(TrioByteStream(left), b"cert")
            await nursery.start(client.run)
            tracker.clients[peer] = client
            models = [held.info for held in service.roster]
            table.upsert(record(peer, models))
            table.update_load(peer, service.load())
        yield Router(table, cast(Tracker, tracker))
        nursery.cancel_scope.cancel()


def node(runners: dict[str, ModelRunner]) -> NodeService:
    return NodeService(Roster.of(runners, 1, 4), lambda: 0)


def image_params(model: str = "pics", n: int = 2) -> ImageParams:
    return ImageParams(model=model, prompt="squares", n=n, width=64, height=64, seed=9)


async def test_router_fails_over_to_the_next_node() -> None:
    draining, healthy = node({"pics": Squares()}), node({"pics": Squares()})
    async with swarm_of({"peer-a": draining, "peer-b": healthy}) as router:
        # peer-a ranks first (same load, lower id) but refuses: it began draining after
        # its last load update reached the gateway.
        draining.roster.drain()
        result = await router.generate_image(image_params(), 10)
    assert (result.peer_id, result.images, result.seed) == ("peer-b", [b"png-0", b"png-1"], 9)
    assert router.retries == 1


async def test_router_matches_the_task() -> None:
    nodes = {"peer-a": node({"pics": Squares(), "echo": EchoRunner()})}
    async with swarm_of(nodes) as router:
        with pytest.raises(UnknownModel) as info:
            await router.generate_image(image_params("echo"), 10)
        assert info.value.available == ["pics"]
        text = GenerateParams(model="pics", prompt="hi")
        with pytest.raises(UnknownModel) as info:
            async with router.generate(text, 10):
                pass
        assert info.value.available == ["echo"]
        assert router.models() == ["echo", "pics"]


async def test_router_checks_what_the_node_sends() -> None:
    async with swarm_of({"peer-a": node({"pics": Squares(short=True)})}) as router:
        with pytest.raises(UpstreamError) as info:
            await router.generate_image(image_params(n=3), 10)
        assert info.value.code is ErrorCode.INTERNAL


async def test_router_without_a_free_node() -> None:
    busy = node({"pics": Squares()})
    async with swarm_of({"peer-a": busy}) as router:
        busy.roster.drain()
        with pytest.raises(NoPeerReady, match="draining"):
            await router.generate_image(image_params(), 10)


async def test_a_drawing_yields_its_steps_then_its_images() -> None:
    async with swarm_of({"peer-a": node({"pics": Squares()})}) as router:
        params = replace(image_params(), steps=3, progress=True)
        async with router.draw(params, 10) as drawing:
            events = [event async for event in drawing.events()]
        *steps, first, second = events
        # Steps done while one was being sent fold into the newest: in order, ending at 3.
        numbers = [s.step if isinstance(s, ImageStep) else 0 for s in steps]
        assert steps[-1] == ImageStep(3, 3) and numbers == sorted(set(numbers)) and 0 not in numbers
        assert [first, second] == [b"png-0", b"png-1"]
        assert (drawing.peer_id, drawing.images, drawing.seed) == ("peer-a", [first, second], 9)
        # Not asked for, no steps: the images alone, as before.
        async with router.draw(image_params(), 10) as drawing:
            assert [event async for event in drawing.events()] == [b"png-0", b"png-1"]
