"""The diffusers runner on a tiny random Stable Diffusion, and the node's ``generate_image``.

The runner is loaded through ``load_runner`` and the real ``from_pretrained``; the RPC
tests run the node service over in-memory streams, with the real runner and with a
torch-free one that lets cancellation be timed.
"""

from __future__ import annotations

import io
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import torch
import trio
import trio.testing
from PIL import Image

from node.p2p.rpc_client import RemoteError, RpcClient
from node.p2p.rpc_server import Caller, RpcError, RpcServer
from node.p2p.streams import TrioByteStream
from node.worker.handlers import NodeService
from node.worker.loading import load_runner, task_of
from node.worker.roster import Roster
from node.worker.runners import (
    EchoRunner,
    GenerationCancelled,
    ImageRunner,
    ModelRunner,
    Runner,
    no_progress,
)
from node.worker.runners.base import Steps, no_steps
from node.worker.runners.image import DiffusersRunner
from protocols import ErrorCode, GenerateParams, ImageParams, ImageStep, ModelInfo
from protocols.operator import ModelSpec
from tests.stand_in_directml import stand_in_directml
from tests.tiny_models import build_tiny_sd

# Models (tiny ones built here, or the real default) take seconds to build and load.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sd_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="module")
def runner(sd_path: Path) -> Iterator[DiffusersRunner]:
    loaded = load_runner(
        ModelSpec(str(sd_path)), sd_path.parent, "cpu", no_progress, lambda needs: None
    )
    assert isinstance(loaded, DiffusersRunner)
    yield loaded
    loaded.close()


def params(**kw: object) -> ImageParams:
    values: dict[str, object] = {
        "model": "tiny-sd",
        "prompt": "a red cat",
        "width": 64,
        "height": 64,
        "steps": 2,
        "seed": 7,
    }
    return ImageParams(**values | kw)  # type: ignore[arg-type]


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return image


# --- the runner ------------------------------------------------------------------------------


def test_info_and_protocol(runner: DiffusersRunner, sd_path: Path) -> None:
    assert runner.info == ModelInfo(str(sd_path), "text-to-image", "float32", 77, 1, "ready")
    assert isinstance(runner, ImageRunner)
    assert not isinstance(runner, Runner)
    assert task_of(str(sd_path)) == "text-to-image"
    assert task_of("echo") == "text-generation"


def test_images_decode_at_the_requested_size(runner: DiffusersRunner) -> None:
    images = runner.generate_images(params(n=2, width=96, height=64), threading.Event())
    assert len(images) == 2
    for png in images:
        image = decode(png)
        assert (image.size, image.mode) == ((96, 64), "RGB")
    assert images[0] != images[1]  # one seed, but each image of a batch has its own noise


def test_same_seed_same_bytes(runner: DiffusersRunner) -> None:
    first = runner.generate_images(params(seed=11), threading.Event())
    assert first == runner.generate_images(params(seed=11), threading.Event())
    assert first != runner.generate_images(params(seed=12), threading.Event())
    unseeded = [runner.generate_images(params(seed=None), threading.Event()) for _ in range(2)]
    assert unseeded[0] != unseeded[1]


def test_negative_prompt_changes_the_image(runner: DiffusersRunner) -> None:
    plain = runner.generate_images(params(seed=11), threading.Event())
    avoided = runner.generate_images(params(seed=11, negative_prompt="blue"), threading.Event())
    assert avoided != plain


class CancelAfter(threading.Event):
    """An event that reads as set from its ``checks``-th look on, counting the looks."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self.checks = checks
        self.looks = 0

    def is_set(self) -> bool:
        self.looks += 1
        return self.looks >= self.checks


def test_each_step_is_reported_in_order(runner: DiffusersRunner) -> None:
    seen: list[tuple[int, int]] = []
    images = runner.generate_images(
        params(steps=3), threading.Event(), lambda step, of: seen.append((step, of))
    )
    assert seen == [(1, 3), (2, 3), (3, 3)] and len(images) == 1


def test_cancellation_stops_between_steps(runner: DiffusersRunner) -> None:
    cancelled = CancelAfter(4)
    with pytest.raises(GenerationCancelled, match="after 3 of 100 steps"):
        runner.generate_images(params(steps=100), cancelled)
    assert cancelled.looks == 4  # once before the first step, then once per step
    # The runner is free again at once.
    assert len(runner.generate_images(params(), threading.Event())) == 1


def test_cancelled_before_start(runner: DiffusersRunner) -> None:
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(GenerationCancelled, match="before the first step"):
        runner.generate_images(params(), cancelled)


def test_closed_runner_refuses(sd_path: Path) -> None:
    own = DiffusersRunner.load("own", sd_path, "cpu", no_progress)
    own.close()
    own.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        own.generate_images(params(), threading.Event())


def test_a_directml_node_loads_on_the_device_torch_directml_names(
    runner: DiffusersRunner, sd_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directml = stand_in_directml(device="cpu")
    monkeypatch.setitem(sys.modules, "torch_directml", directml)
    own = load_runner(
        ModelSpec(str(sd_path)), sd_path.parent, "directml", no_progress, lambda needs: None
    )
    try:
        assert isinstance(own, DiffusersRunner)
        assert directml.asked == [0]  # the default adapter
        # The same pipeline on the same device: the very images of the CPU runner.
        assert own.generate_images(params(), threading.Event()) == runner.generate_images(
            params(), threading.Event()
        )
    finally:
        own.close()


# --- generate_image over RPC -----------------------------------------------------------------


class SlowImages:
    """A torch-free image model: ``delay`` seconds per step, images named by seed."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.stopped = threading.Event()

    @property
    def info(self) -> ModelInfo:
        return ModelInfo("slow", "text-to-image", "none", 77, 1, "ready")

    def generate_images(
        self, params: ImageParams, cancelled: threading.Event, steps: Steps = no_steps
    ) -> list[bytes]:
        for step in range(1, params.steps + 1):
            if cancelled.is_set():
                self.stopped.set()
                raise GenerationCancelled("cancelled")
            time.sleep(self.delay)
            steps(step, params.steps)
        return [f"{params.seed}/{i}".encode() for i in range(params.n)]

    def close(self) -> None:
        pass


def authorize(cert: bytes, peer: str) -> Caller:
    if cert in (b"gateway", b"client"):
        return Caller(peer, cert.decode())
    raise RpcError(ErrorCode.UNAUTHORIZED, "not admitted")


@asynccontextmanager
async def node(
    runners: dict[str, ModelRunner], cert: bytes = b"gateway"
) -> AsyncIterator[tuple[RpcClient, NodeService]]:
    service = NodeService(Roster.of(runners, 1, 1), lambda: 0)
    left, right = trio.testing.memory_stream_pair()
    server = RpcServer(service.handlers, authorize)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve, TrioByteStream(right), "gateway-peer")
        client = RpcClient(TrioByteStream(left), cert)
        await nursery.start(client.run)
        yield client, service
        nursery.cancel_scope.cancel()


def wire(model: str = "slow", **kw: object) -> dict[str, object]:
    return params(model=model, **kw).to_wire()


async def test_rpc_sends_each_image_as_a_chunk(runner: DiffusersRunner) -> None:
    async with node({"tiny-sd": runner}) as (client, _):
        async with client.open_call("generate_image", wire("tiny-sd", n=2)) as call:
            chunks = [chunk async for chunk in call]
        assert [decode(c["image"]).size for c in chunks] == [(64, 64), (64, 64)]
        assert call.result == {"images": 2, "seed": 7}


async def test_rpc_sends_the_steps_before_the_images_when_asked(runner: DiffusersRunner) -> None:
    async with node({"tiny-sd": runner}) as (client, _):
        async with client.open_call("generate_image", wire("tiny-sd", steps=3)) as call:
            quiet = [chunk async for chunk in call]
        assert [list(c) for c in quiet] == [["image"]]  # no steps unless asked for
        body = wire("tiny-sd", steps=3, progress=True)
        async with client.open_call("generate_image", body) as call:
            chunks = [chunk async for chunk in call]
    *steps, image = chunks
    assert [ImageStep.from_wire(s) for s in steps] == [ImageStep(i, 3) for i in (1, 2, 3)]
    assert decode(image["image"]).size == (64, 64)
    assert image["image"] == quiet[0]["image"]  # the same seed, the same picture


async def test_steps_arrive_in_order_and_end_at_the_last() -> None:
    # 100 steps with no delay: those done while a chunk is written fold into the newest.
    body = wire(steps=100, progress=True)
    async with (
        node({"slow": SlowImages()}) as (client, _),
        client.open_call("generate_image", body) as call,
    ):
        chunks = [chunk async for chunk in call]
    steps = [ImageStep.from_wire(c) for c in chunks[:-1]]
    assert [s.step for s in steps] == sorted({s.step for s in steps})
    assert steps[-1] == ImageStep(100, 100) and "image" in chunks[-1]


async def test_rpc_picks_and_reports_a_seed() -> None:
    async with node({"slow": SlowImages()}) as (client, _):
        async with client.open_call("generate_image", wire(seed=None)) as call:
            chunks = [chunk async for chunk in call]
        assert call.result is not None
        seed = call.result["seed"]
        assert isinstance(seed, int)
        assert chunks == [{"image": f"{seed}/0".encode()}]


async def test_rpc_refusals() -> None:
    runners: dict[str, ModelRunner] = {"slow": SlowImages(), "echo": EchoRunner()}
    async with node(runners) as (client, _):
        for method, body in [
            ("generate_image", wire("echo")),  # a text model
            ("generate_image", wire("absent")),
            ("generate", GenerateParams(model="slow", prompt="hi").to_wire()),  # an image model
        ]:
            with pytest.raises(RemoteError) as info:
                await client.call(method, body)
            assert info.value.code is ErrorCode.MODEL_NOT_FOUND
        for bad in [wire() | {"width": 65}, wire() | {"n": 5}, wire() | {"prompt": 3}, {}]:
            with pytest.raises(RemoteError) as info:
                await client.call("generate_image", bad)
            assert info.value.code is ErrorCode.BAD_REQUEST
    async with node(runners, cert=b"client") as (client, _):
        with pytest.raises(RemoteError) as info:
            await client.call("generate_image", wire())
        assert info.value.code is ErrorCode.UNAUTHORIZED


async def test_leaving_the_call_stops_the_model_before_freeing_the_slot() -> None:
    model = SlowImages(delay=0.05)
    async with node({"slow": model}) as (client, service):
        with trio.move_on_after(0.3):
            await client.call("generate_image", wire(steps=100))
        with trio.fail_after(5):
            await service.roster.wait_idle()
        # The slot came free only once the model had stopped, not when the caller left.
        assert model.stopped.is_set()


async def test_deadline_stops_the_model() -> None:
    model = SlowImages(delay=0.05)
    async with node({"slow": model}) as (client, service):
        with pytest.raises(RemoteError) as info:
            await client.call("generate_image", wire(steps=100), timeout=0.2)
        assert info.value.code is ErrorCode.DEADLINE_EXCEEDED
        assert model.stopped.is_set()
        assert service.roster.inflight == 0
