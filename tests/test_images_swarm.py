"""Image generation across the swarm: the router over in-memory node connections, then a
real gateway and node process serving a tiny Stable Diffusion to the ``openai`` client."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest
import trio
import trio.testing
from PIL import Image

from gateway.routing.peer_table import PeerTable
from gateway.routing.router import NoPeerReady, Router, UnknownModel, UpstreamError
from gateway.routing.tracker import Tracker
from node.p2p.rpc_client import RpcClient
from node.p2p.rpc_server import Caller, RpcServer
from node.p2p.streams import TrioByteStream
from node.worker.handlers import NodeService
from node.worker.runners import EchoRunner, ModelRunner
from node.worker.scheduler import Scheduler
from protocols import ErrorCode, GenerateParams, Hardware, ImageParams, Load, ModelInfo, NodeRecord
from tests.conftest import Swarm
from tests.tiny_models import build_tiny_sd


class Squares:
    """A torch-free image model; ``short`` makes it return one image too few."""

    def __init__(self, model_id: str = "pics", short: bool = False) -> None:
        self.model_id = model_id
        self.short = short
        self.calls = 0

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self.model_id, "text-to-image", "none", 77, 1, "ready")

    def generate_images(self, params: ImageParams, cancelled: threading.Event) -> list[bytes]:
        self.calls += 1
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
        hardware=Hardware("cpu", "test", 0, 0),
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
            models = [r.info for r in service.runners.values()]
            table.upsert(record(peer, models))
            table.update_load(peer, service.load())
        yield Router(table, cast(Tracker, tracker))
        nursery.cancel_scope.cancel()


def node(runners: dict[str, ModelRunner]) -> NodeService:
    return NodeService(runners, Scheduler(1, 4), lambda: 0)


def image_params(model: str = "pics", n: int = 2) -> ImageParams:
    return ImageParams(model=model, prompt="squares", n=n, width=64, height=64, seed=9)


async def test_router_fails_over_to_the_next_node() -> None:
    draining, healthy = node({"pics": Squares()}), node({"pics": Squares()})
    async with swarm_of({"peer-a": draining, "peer-b": healthy}) as router:
        # peer-a ranks first (same load, lower id) but refuses: it began draining after
        # its last load update reached the gateway.
        draining.scheduler.drain()
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
        busy.scheduler.drain()
        with pytest.raises(NoPeerReady, match="draining"):
            await router.generate_image(image_params(), 10)


# --- real processes --------------------------------------------------------------------------


def wait_for_model(url: str, token: str, model: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"})
        for entry in listed.json()["data"]:
            if entry["id"] == model and any(p["state"] == "ready" for p in entry["peers"]):
                return
        time.sleep(0.2)
    raise AssertionError(f"the gateway never saw {model} ready")


def test_openai_client_through_a_real_swarm(swarm: Swarm, tmp_path: Path) -> None:
    model = str(build_tiny_sd(tmp_path / "tiny-sd"))
    gateway = swarm.start_gateway()
    swarm.start_node("node-0", [str(cast(list[str], gateway["addrs"])[0])], [model])
    swarm.wait_ready(["node-0"])
    url, token = swarm.url(), swarm.token()
    wait_for_model(url, token, model)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=60)
    knobs: dict[str, Any] = {"steps": 2, "seed": 3}

    raw = client.images.with_raw_response.generate(
        model=model, prompt="a red cat", size=cast(Any, "64x64"), response_format="b64_json",
        extra_body=knobs,
    )  # fmt: skip
    assert raw.headers["x-bitinglip-node"] == swarm.peer_id("node-0")
    inline = raw.parse()
    assert inline.data is not None and inline.data[0].b64_json is not None
    png = base64.b64decode(inline.data[0].b64_json)
    assert Image.open(io.BytesIO(png)).size == (64, 64)

    linked = client.images.generate(
        model=model, prompt="a red cat", size=cast(Any, "64x64"), response_format="url",
        extra_body=knobs,
    )  # fmt: skip
    assert linked.data is not None and linked.data[0].url is not None
    assert linked.data[0].url.startswith(f"{url}/v1/images/")
    fetched = httpx.get(linked.data[0].url, timeout=10)
    assert fetched.status_code == 200
    assert fetched.content == png  # same seed, same image
    stored = list((swarm.data_dir / "peers" / "gateway" / "images").iterdir())
    assert [p.read_bytes() for p in stored] == [png]

    # A text route does not reach an image model.
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
