"""The image-to-text runners on a tiny random LLaVA (chat) and BLIP (captions), and the
node's ``describe``."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from node.p2p.rpc_client import RemoteError
from node.worker.loading import load_runner, task_of
from node.worker.runners import Delta, ModelRunner, no_progress
from node.worker.runners.base import Runner, VisionRunner
from node.worker.runners.vision import Captioner, VisionChat, open_image
from protocols import ErrorCode, VisionMessage, VisionParams
from protocols.operator import ModelSpec
from tests.tiny_models import build_tiny_blip, build_tiny_llava
from tests.unit.node.worker.runners.test_image import CancelAfter, node

pytestmark = pytest.mark.slow


def png(size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 0, 0)).save(out, format="PNG")
    return out.getvalue()


def load(path: Path) -> ModelRunner:
    return load_runner(ModelSpec(str(path)), path.parent, "cpu", no_progress, lambda _: None)


@pytest.fixture(scope="module")
def llava(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VisionChat]:
    torch.set_num_threads(1)
    runner = load(build_tiny_llava(tmp_path_factory.mktemp("eyes") / "llava"))
    assert isinstance(runner, VisionChat)
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def blip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Captioner]:
    torch.set_num_threads(1)
    runner = load(build_tiny_blip(tmp_path_factory.mktemp("eyes") / "blip"))
    assert isinstance(runner, Captioner)
    yield runner
    runner.close()


def asked(images: int = 1, **kw: object) -> VisionParams:
    parts: list[str | int] = [*range(images), "what is in this image ?"]
    values: dict[str, object] = {
        "model": "m",
        "messages": [VisionMessage("user", parts)],
        "images": [png()] * images,
        "max_tokens": 6,
    }
    return VisionParams(**values | kw)  # type: ignore[arg-type]


def said(runner: VisionRunner, params: VisionParams) -> list[Delta]:
    return list(runner.describe(params, threading.Event()))


def test_what_a_node_advertises(llava: VisionChat, blip: Captioner, tmp_path: Path) -> None:
    for runner in (llava, blip):
        assert isinstance(runner, VisionRunner) and not isinstance(runner, Runner)
        assert (runner.info.task, runner.info.max_batch) == ("image-to-text", 1)
    assert llava.info.context_length == 512
    assert task_of(str(build_tiny_blip(tmp_path / "b"))) == "image-to-text"


def test_a_chat_about_a_picture_streams_to_max_tokens(llava: VisionChat) -> None:
    deltas = said(llava, asked())
    last = deltas[-1]
    assert (last.finish_reason, last.completion_tokens) == ("length", 6)
    assert last.prompt_tokens > 16  # the picture's patches are part of the prompt
    assert "".join(d.text for d in deltas).strip()


def test_a_stop_sequence_ends_the_answer_before_it(llava: VisionChat) -> None:
    whole = "".join(d.text for d in said(llava, asked(max_tokens=12, seed=1)))
    word = whole.split()[1]
    stopped = said(llava, asked(max_tokens=12, seed=1, stop=[word]))
    assert stopped[-1].finish_reason == "stop"
    assert word not in "".join(d.text for d in stopped)


def test_text_alone_and_several_pictures(llava: VisionChat) -> None:
    assert said(llava, asked(images=0))[-1].completion_tokens == 6
    two = said(llava, asked(images=2))[-1]
    assert two.prompt_tokens > said(llava, asked())[-1].prompt_tokens


def test_cancellation_stops_the_answer(llava: VisionChat) -> None:
    deltas = list(llava.describe(asked(max_tokens=200), CancelAfter(3)))
    assert deltas[-1].completion_tokens < 200


def test_a_captioner_describes_the_last_picture(blip: Captioner) -> None:
    caption = said(blip, asked())
    assert caption[-1].finish_reason in ("stop", "length")
    with pytest.raises(ValueError, match="describes pictures"):
        said(blip, asked(images=0))


def test_pictures_are_opened_again_with_caps() -> None:
    assert open_image(png()).size == (40, 30)
    with pytest.raises(ValueError, match="larger than 1024"):
        open_image(png((1100, 10)))
    with pytest.raises(ValueError, match="cannot be read"):
        open_image(b"\x89PNG\r\n\x1a\n not really")


async def test_describe_over_rpc_streams_like_generate(llava: VisionChat) -> None:
    async with node({"llava": llava}) as (client, _):
        async with client.open_call("describe", asked(model="llava").to_wire()) as call:
            chunks = [chunk async for chunk in call]
        assert chunks and all("text" in c for c in chunks)
        assert call.result is not None and call.result["completion_tokens"] == 6
        whole = await client.call("describe", asked(model="llava", stream=False).to_wire())
        assert whole["text"] and whole["finish_reason"] == "length"
        with pytest.raises(RemoteError) as info:
            await client.call(
                "generate", {"model": "llava", "prompt": "hi", "max_tokens": 3, "stop": []}
            )
        assert info.value.code is ErrorCode.MODEL_NOT_FOUND  # a picture reader is not a text model
