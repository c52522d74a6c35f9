"""The gateway client's sentences, over real HTTP.

The gateway's own app runs on hypercorn with a scripted swarm behind it (a real
``Generation`` around a real ``Call``) and a meter that refuses, so every error shape is the
one the gateway really sends. Routes others are still building get a stand-in that answers
as docs/api.md says. The client runs in a worker thread, as it is synchronous.
"""

from __future__ import annotations

import base64
import math
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.types import ASGIApp

import keys
from gateway.accounts.metering import Outcome
from gateway.api.app import create_app
from gateway.api.auth import Authenticator
from gateway.api.errors import ApiError
from gateway.api.services import Services
from gateway.client import api_client as c
from gateway.routing.router import Generation, NoPeerReady, UnknownModel
from node.p2p.rpc_client import Call
from protocols import Chunk, End, Error, ErrorCode, GenerateParams, Message

T = TypeVar("T")
KEY = Ed25519PrivateKey.generate()
TOKEN = keys.issue(KEY, "alice", 3600)
PEER = "12D3KooWScriptedNodeForClientTests"
PNG = b"\x89PNG\r\n\x1a\nnot really an image"


class Backend:
    """``echo`` streams the last message back; ``flaky`` fails after one piece;
    ``busy`` has no node ready; anything else is unknown."""

    def serving(self) -> dict[str, list[dict[str, Any]]]:
        peer = {"peer_id": PEER, "state": "ready", "healthy": True, "inflight": 0}
        return {"echo": [peer], "flaky": [peer], "sd": [peer]}

    @asynccontextmanager
    async def generate(self, params: GenerateParams, timeout: float) -> AsyncIterator[Generation]:
        if params.model == "busy":
            raise NoPeerReady("no node can take 'busy' now (a1b2c3d4: loading)")
        if params.model not in self.serving():
            raise UnknownModel(params.model, sorted(self.serving()))
        assert params.messages is not None
        words = params.messages[-1].content.split()
        frames: list[Message] = [Chunk(1, {"text": " " * (i > 0) + w}) for i, w in enumerate(words)]
        if params.model == "flaky":
            frames = [frames[0], Error(1, ErrorCode.INTERNAL, "GPU fell off the bus")]
        else:
            frames.append(End(1, {"prompt_tokens": 3, "completion_tokens": len(words)}))
        send, receive = trio.open_memory_channel[Message](math.inf)
        for frame in frames:
            send.send_nowait(frame)
        call = Call(1, receive)
        yield Generation(PEER, call, await anext(call, None))


class Limiter:
    """Refuses user ``limited`` with a 429, as a rate limit would."""

    async def admit(self, claims: keys.Claims, outcome: Outcome) -> None:
        if claims.sub == "limited":
            raise ApiError(
                429, "10 requests per minute", "rate_limit_exceeded", headers={"Retry-After": "7"}
            )

    async def record(self, claims: keys.Claims, outcome: Outcome) -> None:
        pass

    def headers(self, claims: keys.Claims) -> dict[str, str]:
        return {}


def peers() -> list[dict[str, Any]]:
    return [
        {
            "peer_id": PEER,
            "role": "node",
            "addrs": ["/ip4/127.0.0.1/tcp/4001"],
            "version": "0.1.0",
            "hardware": {"backend": "cpu", "device_name": "cpu", "vram_total": 0, "vram_free": 0},
            "models": [
                {"id": "echo", "task": "text-generation", "dtype": "none", "state": "ready"},
                {"id": "flaky", "task": "text-generation", "dtype": "none", "state": "ready"},
                {"id": "sd", "task": "text-to-image", "dtype": "float32", "state": "ready"},
            ],
            "load": {
                "inflight": 0,
                "queued": 0,
                "capacity": 8,
                "tokens_per_s": 0.0,
                "draining": False,
            },
            "last_seen": 0.5,
            "healthy": True,
        }
    ]


def gateway_app() -> ASGIApp:
    services = Services(
        backend=Backend(), auth=Authenticator(KEY.public_key()), meters=[Limiter()], peers=peers
    )
    return create_app(services)


def contract_app() -> FastAPI:
    """Routes of docs/api.md the gateway does not serve yet, answered as documented."""
    app = FastAPI()

    @app.post("/v1/auth/login")
    async def login(request: Request) -> JSONResponse:
        body = await request.json()
        if body != {"username": "alice", "password": "s3cret"}:
            error = {"message": "invalid username or password", "code": "invalid_credentials"}
            return JSONResponse({"error": error}, 401)
        user = {"username": "alice"}
        return JSONResponse({"user": user, "token": "tok-alice", "expires_at": 1900000000})

    @app.get("/v1/usage")
    async def usage(days: int) -> dict[str, Any]:
        row = {"date": "2025-01-02", "model": "echo", "requests": days, "prompt_tokens": 5}
        return {"object": "list", "data": [row], "totals": {"requests": days}, "limits": {}}

    @app.post("/v1/images/generations")
    async def images(request: Request) -> dict[str, Any]:
        body = await request.json()
        assert body["response_format"] == "b64_json" and body["n"] == 1
        return {"created": 0, "data": [{"b64_json": base64.b64encode(PNG).decode()}]}

    @app.get("/v1/models")
    async def not_a_gateway() -> PlainTextResponse:
        return PlainTextResponse("<html>hello</html>")

    return app


@asynccontextmanager
async def served(app: ASGIApp | FastAPI) -> AsyncIterator[str]:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        yield str(binds[0])
        stop.set()


async def off_thread(call: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(call)


def catch(call: Callable[[], object]) -> c.ClientError:
    with pytest.raises(c.ClientError) as caught:
        call()
    return caught.value


def stream_all(client: c.GatewayClient, model: str, text: str) -> tuple[str, c.ChatStream]:
    with client.chat_stream(model, [{"role": "user", "content": text}], temperature=0) as s:
        return "".join(s), s


async def test_a_streamed_answer_with_its_node_and_usage() -> None:
    async with served(gateway_app()) as url:
        client = c.GatewayClient(url, TOKEN)
        text, stream = await off_thread(lambda: stream_all(client, "echo", "one two three"))
        assert text == "one two three"
        assert stream.node == PEER
        assert stream.usage["completion_tokens"] == 3 and stream.finish_reason == "stop"
        # This gateway's /v1/models does not say what each model does: its peers do.
        assert await off_thread(client.chat_models) == ["echo", "flaky"]
        assert await off_thread(client.image_models) == ["sd"]
        listed = await off_thread(client.peers)
        assert listed[0]["peer_id"] == PEER
        client.close()


async def test_refusals_read_as_sentences() -> None:
    async with served(gateway_app()) as url:
        client = c.GatewayClient(url, TOKEN)
        limited = c.GatewayClient(url, keys.issue(KEY, "limited", 3600))
        stranger = c.GatewayClient(url, keys.issue(Ed25519PrivateKey.generate(), "bob", 3600))

        refused = await off_thread(lambda: catch(stranger.models))
        assert isinstance(refused, c.AuthRefused)
        assert str(refused).startswith("your token was refused (")
        assert str(refused).endswith("); log in again with `bitinglip login`")

        unknown = await off_thread(lambda: catch(lambda: stream_all(client, "nope", "hi")))
        assert isinstance(unknown, c.UnknownModel) and unknown.available == ["echo", "flaky"]
        assert str(unknown) == "unknown model 'nope'; available: echo, flaky"

        busy = await off_thread(lambda: catch(lambda: stream_all(client, "busy", "hi")))
        assert isinstance(busy, c.NoPeerReady)
        assert (
            str(busy)
            == "no node has the model ready: no node can take 'busy' now (a1b2c3d4: loading)"
        )

        over = await off_thread(lambda: catch(lambda: stream_all(limited, "echo", "hi")))
        assert isinstance(over, c.RateLimited) and over.retry_after == 7
        assert str(over) == "you are over a rate limit (10 requests per minute); try again in 7 s"

        broke = await off_thread(lambda: catch(lambda: stream_all(client, "flaky", "a b c")))
        assert isinstance(broke, c.StreamFailed)
        assert "GPU fell off the bus" in str(broke) and str(broke).startswith(
            "the answer broke off"
        )

        for each in (client, limited, stranger):
            each.close()


async def test_documented_routes_and_a_server_that_is_not_a_gateway(tmp_path: Any) -> None:
    async with served(contract_app()) as url:
        client = c.GatewayClient(url.removeprefix("http://") + "/")  # host:port is enough
        assert client.url == url
        login = await off_thread(lambda: client.login("alice", "s3cret"))
        assert login["token"] == "tok-alice"
        wrong = await off_thread(lambda: catch(lambda: client.login("alice", "guess")))
        assert isinstance(wrong, c.AuthRefused)
        assert str(wrong) == (
            "the gateway refused that username and password (invalid username or password)"
        )
        usage = await off_thread(lambda: client.usage(days=7))
        assert usage["data"][0]["requests"] == 7
        assert await off_thread(lambda: client.image("sd", "a cat")) == [PNG]
        missing = await off_thread(lambda: catch(client.peers))
        assert str(missing) == (
            f"the gateway at {url} does not offer /v1/peers: it may be an older version"
        )
        odd = await off_thread(lambda: catch(client.models))
        assert isinstance(odd, c.BadResponse)
        assert str(odd) == f"{url} did not answer /v1/models like a BitingLip gateway"
        client.close()


def test_an_absent_gateway_is_named() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = c.GatewayClient(f"http://127.0.0.1:{port}", TOKEN)
    error = catch(client.models)
    assert isinstance(error, c.Unreachable)
    assert str(error) == (
        f"cannot reach the gateway at http://127.0.0.1:{port}: is `bitinglip up` running?"
    )
