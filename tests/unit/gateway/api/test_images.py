"""``/v1/images/generations`` and ``/v1/images/{name}.png``, in-process with a fake swarm.

The fake backend answers like a ``Router``: real PNGs from a node that does not exist,
drawn from the seed (chosen at random when the request gave none, as a node does), or the
routing errors a real one raises. The last test checks, still in-process, that the
request shapes of the official ``openai`` client are understood; test_images_swarm runs
that client against a real swarm.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image
from starlette.types import ASGIApp

import keys
from gateway.accounts.metering import Outcome
from gateway.api.app import create_app
from gateway.api.auth import Authenticator
from gateway.api.errors import ApiError
from gateway.api.image_store import DEFAULT_TTL as IMAGE_TTL
from gateway.api.image_store import ImageStore
from gateway.api.inference import NODE_HEADER
from gateway.api.services import ImageBackend, Services
from gateway.routing.router import (
    Drawing,
    Generation,
    Images,
    NoPeerReady,
    UnknownModel,
    UpstreamError,
)
from node.p2p.rpc_client import Call
from protocols import Chunk, End, Error, ErrorCode, GenerateParams, ImageParams, ImageStep, Message
from protocols.generation import MAX_SEED
from tests.unit.gateway.api.test_http import http

KEY = Ed25519PrivateKey.generate()
TOKEN = keys.issue(KEY, "alice", 3600)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PEER = "12D3KooWFakeImageNode"
TIMEOUT = 42.0
URL = re.compile(r"http://test/v1/images/([0-9a-f]{32})\.png")


def png(width: int, height: int, shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


class FakeImages:
    """``pics`` answers with solid squares whose colour follows the seed; ``busy`` has no
    free node; ``broken`` and ``refused`` fail on the node; anything else is unknown."""

    def __init__(self) -> None:
        self.calls: list[tuple[ImageParams, float]] = []
        self.seeds: list[int] = []  # the seed each call used

    async def generate_image(self, params: ImageParams, timeout: float) -> Images:
        return self._made(params, timeout)

    @asynccontextmanager
    async def draw(self, params: ImageParams, timeout: float) -> AsyncIterator[Drawing]:
        """The frames a node sends for the call, through a real ``Call``: each step, then
        the images; ``late`` fails after two steps."""
        late = params.model == "late"
        made = self._made(replace(params, model="pics") if late else params, timeout)
        send, receive = trio.open_memory_channel[Message](math.inf)
        for step in range(1, (2 if late else params.steps) + 1):
            send.send_nowait(Chunk(0, ImageStep(step, params.steps).to_wire()))
        if late:
            send.send_nowait(Error(0, ErrorCode.NO_MEMORY, "out of memory at step 3"))
        for image in made.images:
            send.send_nowait(Chunk(0, {"image": image}))
        send.send_nowait(End(0, {"images": params.n, "seed": made.seed}))
        yield Drawing(PEER, Call(0, receive), None, params.n)

    def _made(self, params: ImageParams, timeout: float) -> Images:
        self.calls.append((params, timeout))
        if params.model == "busy":
            raise NoPeerReady("no node can take 'busy' now (a1b2c3d4: loading)")
        if params.model == "broken":
            raise UpstreamError(ErrorCode.INTERNAL, "node failed mid-answer: out of memory")
        if params.model == "refused":
            raise UpstreamError(ErrorCode.BAD_REQUEST, "the pipeline refused the size")
        if params.model != "pics":
            raise UnknownModel(params.model, ["pics"])
        seed = secrets.randbelow(MAX_SEED + 1) if params.seed is None else params.seed
        self.seeds.append(seed)
        images = [png(params.width, params.height, (seed + 10 * i) % 256) for i in range(params.n)]
        return Images(PEER, images, seed)


class NoText:
    """The text side, unused here."""

    def generate(
        self, params: GenerateParams, timeout: float
    ) -> AbstractAsyncContextManager[Generation]:
        raise UnknownModel(params.model, [])

    def serving(self) -> dict[str, list[dict[str, Any]]]:
        return {}


class RecordingMeter:
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    async def admit(self, claims: keys.Claims, outcome: Outcome) -> None:
        if outcome.model == "over-quota":
            raise ApiError(429, "daily quota of images used up", "rate_limited")

    async def record(self, claims: keys.Claims, outcome: Outcome) -> None:
        # A copy: what a durable meter would write now, whatever the route changes later.
        self.outcomes.append(dataclasses.replace(outcome))

    def headers(self, claims: keys.Claims) -> dict[str, str]:
        return {"X-RateLimit-Remaining": str(100 - len(self.outcomes))}


def make_app(
    images: ImageBackend | None, image_dir: Path | None, meter: RecordingMeter | None = None
) -> ASGIApp:
    services = Services(
        backend=NoText(),
        auth=Authenticator(KEY.public_key()),
        request_timeout=TIMEOUT,
        meters=[meter] if meter else [],
        image_backend=images,
        image_store=None if image_dir is None else ImageStore(image_dir),
    )
    return create_app(services)


@pytest.fixture
def backend() -> FakeImages:
    return FakeImages()


@pytest.fixture
def meter() -> RecordingMeter:
    return RecordingMeter()


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    return tmp_path / "images"


@pytest.fixture
async def client(
    backend: FakeImages, image_dir: Path, meter: RecordingMeter
) -> AsyncIterator[httpx.AsyncClient]:
    async with http(make_app(backend, image_dir, meter)) as c:
        yield c


def request(**extra: Any) -> dict[str, Any]:
    return {"model": "pics", "prompt": "a red square", "size": "64x64"} | extra


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return cast(dict[str, Any], error)


def files_in(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


# --- generation ------------------------------------------------------------------------------


async def test_b64_json(client: httpx.AsyncClient, backend: FakeImages) -> None:
    body = request(n=3, size="96x64", response_format="b64_json", seed=5)
    response = await client.post("/v1/images/generations", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers[NODE_HEADER] == PEER
    answer = response.json()
    assert set(answer) == {"created", "data", "seed"}
    assert abs(answer["created"] - time.time()) < 5
    assert answer["seed"] == 5
    sizes = [decoded(base64.b64decode(item["b64_json"])).size for item in answer["data"]]
    assert sizes == [(96, 64)] * 3
    assert backend.calls == [(ImageParams("pics", "a red square", 3, 96, 64, 30, 7.5, 5), TIMEOUT)]


async def test_url_is_served_without_a_token(client: httpx.AsyncClient, image_dir: Path) -> None:
    response = await client.post("/v1/images/generations", json=request(n=2), headers=AUTH)
    assert response.status_code == 200, response.text
    urls = [item["url"] for item in response.json()["data"]]  # url is the default format
    names = [match.group(1) for url in urls if (match := URL.fullmatch(url))]
    assert len(set(names)) == 2
    for url, name in zip(urls, names, strict=True):
        image = await client.get(url)
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
        assert image.content == (image_dir / f"{name}.png").read_bytes()
        assert decoded(image.content).size == (64, 64)
    assert files_in(image_dir) == {f"{name}.png" for name in names}


async def test_diffusion_knobs_pass_through(client: httpx.AsyncClient, backend: FakeImages) -> None:
    body = request(steps=4, guidance_scale=0, negative_prompt="blur", quality="hd", user="x")
    response = await client.post("/v1/images/generations", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    params = backend.calls[0][0]
    assert (params.steps, params.guidance, params.seed) == (4, 0.0, None)
    assert params.negative_prompt == "blur"
    assert response.json()["seed"] == backend.seeds[0]  # the node's choice comes back


async def test_the_answers_seed_makes_the_same_images_again(client: httpx.AsyncClient) -> None:
    async def images(**extra: Any) -> tuple[int, list[str]]:
        body = request(n=2, response_format="b64_json", **extra)
        response = await client.post("/v1/images/generations", json=body, headers=AUTH)
        assert response.status_code == 200, response.text
        answer = response.json()
        return answer["seed"], [item["b64_json"] for item in answer["data"]]

    seed, first = await images()  # no seed: the node picks one and the answer says which
    assert await images(seed=seed) == (seed, first)
    other = (seed + 1) % (MAX_SEED + 1)
    assert (await images(seed=other))[1] != first


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", "64"),
        ("size", "64x"),
        ("size", "64X64"),
        ("size", "60x64"),
        ("size", "64x2048"),
        ("size", "32x32"),
        ("size", 64),
        ("n", 0),
        ("n", 5),
        ("steps", 0),
        ("steps", 101),
        ("guidance_scale", 31),
        ("seed", -1),
        ("prompt", ""),
        ("prompt", "x" * 4001),
        ("response_format", "gif"),
        ("model", ""),
    ],
)
async def test_invalid_field_is_named(
    client: httpx.AsyncClient, backend: FakeImages, field: str, value: Any
) -> None:
    response = await client.post(
        "/v1/images/generations", json=request(**{field: value}), headers=AUTH
    )
    error = error_of(response, 400)
    assert error["param"] == field
    assert error["message"].startswith(f"{field}:")
    assert backend.calls == []


async def test_missing_prompt_and_bad_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/images/generations", json={"model": "pics"}, headers=AUTH)
    assert error_of(response, 400)["param"] == "prompt"
    response = await client.post("/v1/images/generations", content=b"{nope", headers=AUTH)
    assert error_of(response, 400)["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("dall-e-3", 404, "model_not_found"),
        ("busy", 503, "no_peer_ready"),
        ("broken", 502, "internal"),
        ("refused", 400, "bad_request"),
    ],
)
async def test_routing_failures(
    client: httpx.AsyncClient, meter: RecordingMeter, model: str, status: int, code: str
) -> None:
    response = await client.post("/v1/images/generations", json=request(model=model), headers=AUTH)
    assert error_of(response, status)["code"] == code
    assert "x-ratelimit-remaining" in response.headers
    [outcome] = meter.outcomes
    assert (outcome.kind, outcome.status, outcome.images) == ("image", status, 0)


async def test_metered(client: httpx.AsyncClient, meter: RecordingMeter) -> None:
    response = await client.post("/v1/images/generations", json=request(n=2), headers=AUTH)
    assert response.status_code == 200
    assert response.headers["x-ratelimit-remaining"] == "99"
    [outcome] = meter.outcomes
    assert (outcome.user, outcome.model, outcome.kind) == ("alice", "pics", "image")
    assert (outcome.images, outcome.peer_id, outcome.status) == (2, PEER, 200)
    refused = await client.post(
        "/v1/images/generations", json=request(model="over-quota"), headers=AUTH
    )
    assert error_of(refused, 429)["code"] == "rate_limited"


async def test_needs_a_token(client: httpx.AsyncClient, backend: FakeImages) -> None:
    response = await client.post("/v1/images/generations", json=request())
    assert error_of(response, 401)["code"] == "invalid_api_key"
    assert backend.calls == []


async def test_gateway_without_image_store_or_router(backend: FakeImages) -> None:
    async with http(make_app(backend, None)) as client:
        refused = await client.post("/v1/images/generations", json=request(), headers=AUTH)
        assert error_of(refused, 400)["param"] == "response_format"
        inline = request(response_format="b64_json")
        ok = await client.post("/v1/images/generations", json=inline, headers=AUTH)
        assert ok.status_code == 200
        assert (await client.get(f"/v1/images/{'a' * 32}.png")).status_code == 404
    async with http(make_app(None, None)) as client:
        response = await client.post("/v1/images/generations", json=inline, headers=AUTH)
        assert error_of(response, 503)["code"] == "no_peer_ready"


async def test_openapi_documents_the_route(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/v1/images/generations"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"model", "prompt"}
    assert "/v1/images/{name}.png" in spec["paths"]


# --- streamed ---------------------------------------------------------------------------------


def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in response.text.split("\n\n") if b]
    assert all(b.startswith("data: ") for b in blocks), blocks
    return [json.loads(b.removeprefix("data: ")) for b in blocks]


async def test_streamed_steps_then_the_images(
    client: httpx.AsyncClient, backend: FakeImages, meter: RecordingMeter
) -> None:
    # response_format is moot: streamed images come inline, as OpenAI's do.
    body = request(n=2, size="96x64", steps=3, seed=5, stream=True, response_format="url")
    response = await client.post("/v1/images/generations", json=body, headers=AUTH)
    events = sse_events(response)
    assert response.headers[NODE_HEADER] == PEER
    steps = [e for e in events if e["type"] == "image_generation.progress"]
    assert [(e["step"], e["total_steps"]) for e in steps] == [(1, 3), (2, 3), (3, 3)]
    done = events[len(steps) :]
    assert [e["type"] for e in done] == ["image_generation.completed"] * 2
    assert [(e["image_index"], e["seed"], e["size"]) for e in done] == [
        (0, 5, "96x64"),
        (1, 5, "96x64"),
    ]
    assert [decoded(base64.b64decode(e["b64_json"])).size for e in done] == [(96, 64)] * 2
    assert backend.calls[0][0].progress is True
    [outcome] = meter.outcomes
    assert (outcome.images, outcome.status, outcome.peer_id) == (2, 200, PEER)


async def test_a_node_failing_half_way_ends_the_stream_with_an_error(
    client: httpx.AsyncClient, meter: RecordingMeter
) -> None:
    body = request(model="late", steps=5, stream=True)
    events = sse_events(await client.post("/v1/images/generations", json=body, headers=AUTH))
    assert [e["type"] for e in events] == ["image_generation.progress"] * 2 + ["error"]
    assert events[-1]["error"]["code"] == "no_memory"
    assert "node" in events[-1]["error"]["message"]
    [outcome] = meter.outcomes
    assert (outcome.images, outcome.status) == (0, 502)  # no image: none charged


async def test_a_streamed_call_no_node_takes_is_refused_before_any_event(
    client: httpx.AsyncClient,
) -> None:
    body = request(model="busy", stream=True)
    response = await client.post("/v1/images/generations", json=body, headers=AUTH)
    assert error_of(response, 503)["code"] == "no_peer_ready"


# --- serving stored images -------------------------------------------------------------------


@pytest.fixture
def stored(image_dir: Path) -> Iterator[str]:
    """One stored image's name, and a secret beside the image directory."""
    image_dir.mkdir(parents=True)
    name = "0123456789abcdef0123456789abcdef"
    (image_dir / f"{name}.png").write_bytes(png(8, 8, 1))
    (image_dir.parent / "secret.png").write_bytes(b"secret")
    (image_dir / "notes.png").write_bytes(b"not ours")
    yield name


async def test_stored_image_is_served(client: httpx.AsyncClient, stored: str) -> None:
    response = await client.get(f"/v1/images/{stored}.png")
    assert response.status_code == 200
    assert decoded(response.content).size == (8, 8)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/images/notes.png",
        "/v1/images/0123456789ABCDEF0123456789ABCDEF.png",
        "/v1/images/0123456789abcdef0123456789abcde.png",
        "/v1/images/0123456789abcdef0123456789abcdef0.png",
        "/v1/images/ffffffffffffffffffffffffffffffff.png",
        "/v1/images/..%2Fsecret.png",
        "/v1/images/%2E%2E%2Fsecret.png",
        "/v1/images/../secret.png",
        "/v1/images/0123456789abcdef0123456789abcdef.png.png",
        "/v1/images/0123456789abcdef0123456789abcdef",
    ],
)
async def test_anything_else_is_not_found(
    client: httpx.AsyncClient, stored: str, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 404, path
    assert b"secret" not in response.content
    assert b"not ours" not in response.content


async def test_expired_images_are_gone(
    client: httpx.AsyncClient, stored: str, image_dir: Path
) -> None:
    old = time.time() - IMAGE_TTL - 60
    os.utime(image_dir / f"{stored}.png", (old, old))
    assert (await client.get(f"/v1/images/{stored}.png")).status_code == 404
    # The next generation sweeps it away (and leaves what is still fresh).
    response = await client.post("/v1/images/generations", json=request(), headers=AUTH)
    assert response.status_code == 200
    left = files_in(image_dir)
    assert f"{stored}.png" not in left
    assert "notes.png" in left
    assert len(left) == 2


# --- the official client's request shapes, in-process ----------------------------------------


@asynccontextmanager
async def openai_client(app: ASGIApp) -> AsyncIterator[openai.AsyncOpenAI]:
    async with http(app) as http_client:
        # openai types http_client as its httpx2 fork's client but accepts httpx's at runtime.
        yield openai.AsyncOpenAI(
            base_url="http://test/v1",
            api_key=TOKEN,
            http_client=cast(Any, http_client),
            max_retries=0,
        )


async def test_openai_sdk_image_calls_in_process(backend: FakeImages, image_dir: Path) -> None:
    async with openai_client(make_app(backend, image_dir)) as client:
        inline = await client.images.generate(
            model="pics", prompt="a red square", size=cast(Any, "64x64"), n=2,
            response_format="b64_json",
        )  # fmt: skip
        assert inline.data is not None
        for image in inline.data:
            assert image.b64_json is not None
            assert decoded(base64.b64decode(image.b64_json)).size == (64, 64)
        linked = await client.images.generate(
            model="pics", prompt="a red square", size=cast(Any, "64x64"), response_format="url"
        )
        assert linked.data is not None
        assert linked.data[0].url is not None
        assert URL.fullmatch(linked.data[0].url)
        with pytest.raises(openai.NotFoundError) as caught:
            await client.images.generate(model="dall-e-3", prompt="a red square")
        assert caught.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as bad:
            await client.images.generate(model="pics", prompt="x", size=cast(Any, "huge"))
        assert "size" in bad.value.message


async def test_openai_sdk_streams_images_in_process(backend: FakeImages, image_dir: Path) -> None:
    async with openai_client(make_app(backend, image_dir)) as client:
        stream = await client.images.generate(
            model="pics", prompt="a red square", size=cast(Any, "64x64"), stream=True,
            extra_body={"steps": 2, "seed": 4},
        )  # fmt: skip
        events = [event async for event in stream]
    assert [e.type for e in events] == [
        "image_generation.progress",
        "image_generation.progress",
        "image_generation.completed",
    ]
    assert events[1].model_extra == {"step": 2, "total_steps": 2}
    completed = events[-1]
    assert completed.type == "image_generation.completed"
    assert decoded(base64.b64decode(completed.b64_json)).size == (64, 64)
