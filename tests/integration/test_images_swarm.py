"""Image generation through a real gateway and node process serving a tiny Stable Diffusion
to the ``openai`` client."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest
from PIL import Image

from tests.integration.conftest import LocalSwarmFixture
from tests.tiny_models import build_tiny_sd

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


def test_openai_client_through_a_real_swarm(swarm: LocalSwarmFixture, tmp_path: Path) -> None:
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

    # Streamed: the node's steps in order, then the very same image.
    stream = client.images.generate(
        model=model, prompt="a red cat", size=cast(Any, "64x64"), stream=True, extra_body=knobs
    )
    *steps, done = list(stream)
    assert done.type == "image_generation.completed"
    assert base64.b64decode(done.b64_json) == png
    assert {e.type for e in steps} == {"image_generation.progress"}
    counted = [(e.model_extra or {})["step"] for e in steps]
    # Steps done while one was being sent fold into the newest: in order, ending at the last.
    assert counted == sorted(set(counted)) and counted[-1] == 2
    assert {(e.model_extra or {})["total_steps"] for e in steps} == {2}

    # A text route does not reach an image model.
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
