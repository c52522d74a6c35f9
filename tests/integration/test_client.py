"""The gateway client's sentences, over real HTTP, against the gateway's real answers.

In-process: the gateway's own app (``create_app``) on hypercorn, with its real accounts,
limiter and usage meter on a SQLite file, and a real ``Router`` reaching real node
services over in-memory streams; only the models are stand-ins (an echo, a "GPU" that
fails mid-answer, squares for images). Every error the client turns into a sentence is
the one the gateway really sends. Two stand-in servers play what the gateway is not: an
older gateway and a server that is no gateway at all. Last, a real swarm in processes
gives the texts only real peers produce: a node killed in the middle of an answer.
The client runs in a worker thread, as it is synchronous.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

import keys
from gateway.accounts.database import Store
from gateway.accounts.limits import Limiter, Plan, Plans
from gateway.accounts.usage import UsageMeter
from gateway.accounts.users import Accounts
from gateway.api import peers as peers_api
from gateway.api.app import create_app
from gateway.api.auth import Authenticator
from gateway.api.services import Services
from gateway.client import api_client as c
from node.worker.runners import EchoRunner
from node.worker.runners.base import Delta
from protocols import GenerateParams, ModelInfo
from tests.conftest import served
from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_swarm import wait_nodes
from tests.unit.gateway.routing.test_router import Squares, node, swarm_of

T = TypeVar("T")
PASSWORD = "correct horse battery"
GATEWAY_ID = "12D3KooWGatewayForClientTests"


class BrokenGPU:
    """A text model whose device fails after its first word, once ``read`` is set (the
    client has that word): the failure comes in the middle of the answer."""

    info = ModelInfo("flaky", "text-generation", "none", 1 << 20, 1, "ready")

    def __init__(self) -> None:
        self.read = threading.Event()

    def generate(self, params: GenerateParams, cancelled: threading.Event) -> Iterator[Delta]:
        yield Delta("one", 1, 1)
        self.read.wait(30)
        raise RuntimeError("GPU fell off the bus")

    def close(self) -> None:
        pass


@dataclass
class Gateway:
    url: str
    signer: Ed25519PrivateKey
    gpu: BrokenGPU
    audience: str

    def token(self, user: str) -> str:
        return keys.issue(self.signer, user, 3600, audience=self.audience)

    def client(self, user: str | None = None, token: str | None = None) -> c.GatewayClient:
        return c.GatewayClient(self.url, token or (self.token(user) if user else None))

    def raw_error(self, user: str, chat: dict[str, Any]) -> dict[str, Any]:
        """The error the gateway sends for a chat call, read without the client."""
        auth = {"Authorization": f"Bearer {self.token(user)}"}
        url = f"{self.url}/v1/chat/completions"
        response = httpx.post(url, json=chat, headers=auth, timeout=10)
        assert response.status_code >= 400, response.text
        error: dict[str, Any] = response.json()["error"]
        return error


@asynccontextmanager
async def real_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """The gateway's app around two nodes: one serving ``echo``, ``flaky`` and the image
    model ``sd``, one serving ``busy`` but draining. ``alice`` can log in; ``limited``
    may make one request a minute."""
    signer = Ed25519PrivateKey.generate()
    store = Store.open(tmp_path)
    now = time.time()
    store.add_user("alice", keys.hash_password(PASSWORD), "default", now)
    store.add_user("limited", None, "tight", now)
    plans = Plans({"tight": Plan("tight", requests_per_minute=1)})
    accounts = Accounts(store, plans, signer)
    await accounts.load()
    limiter = Limiter(accounts.plan_of)
    await limiter.load(store)
    draining = node({"busy": EchoRunner("busy")})
    draining.roster.drain()
    gpu = BrokenGPU()
    nodes = {
        "12D3KooWNodeA": node({"echo": EchoRunner(), "flaky": gpu, "sd": Squares("sd")}),
        "12D3KooWNodeZ": draining,
    }
    try:
        async with swarm_of(nodes) as router:
            services = Services(
                backend=router,
                auth=Authenticator(
                    keys.KeySet.of(signer.public_key()), [accounts], audience=accounts.audience
                ),
                peer_id=GATEWAY_ID,
                peers=lambda: peers_api.snapshot(router.table, GATEWAY_ID, [], time.time()),
                image_backend=router,
                meters=[limiter, UsageMeter(store)],
                store=store,
                accounts=accounts,
                limiter=limiter,
            )
            async with served(create_app(services)) as url:
                yield Gateway(url, signer, gpu, accounts.audience)
    finally:
        store.close()


async def off_thread(call: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(call)


def catch(call: Callable[[], object]) -> c.ClientError:
    with pytest.raises(c.ClientError) as caught:
        call()
    return caught.value


def stream_all(client: c.GatewayClient, model: str, text: str) -> tuple[str, c.ChatStream]:
    with client.chat_stream(model, [{"role": "user", "content": text}], temperature=0) as s:
        return "".join(s), s


def read_until_broken(client: c.GatewayClient, gpu: BrokenGPU) -> None:
    with client.chat_stream("flaky", [{"role": "user", "content": "a b c"}]) as stream:
        for piece in stream:
            assert piece == "one"
            gpu.read.set()


def chat_body(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}


async def test_a_streamed_answer_with_its_node_and_usage(tmp_path: Path) -> None:
    async with real_gateway(tmp_path) as gw:
        client = gw.client("alice")
        text, stream = await off_thread(lambda: stream_all(client, "echo", "one two three"))
        assert text == "one two three"
        assert stream.node == "12D3KooWNodeA"
        assert stream.usage["completion_tokens"] == 3 and stream.finish_reason == "stop"
        assert await off_thread(client.chat_models) == ["busy", "echo", "flaky"]
        assert await off_thread(client.image_models) == ["sd"]
        listed = await off_thread(client.peers)
        assert listed[0]["peer_id"] == GATEWAY_ID
        assert {p["peer_id"] for p in listed[1:]} == {"12D3KooWNodeA", "12D3KooWNodeZ"}
        assert await off_thread(lambda: client.image("sd", "a cat")) == [b"png-0"]
        client.close()


async def test_refusals_read_as_sentences(tmp_path: Path) -> None:
    async with real_gateway(tmp_path) as gw:
        client = gw.client("alice")
        stranger = gw.client(token=keys.issue(Ed25519PrivateKey.generate(), "bob", 3600))

        refused = await off_thread(lambda: catch(stranger.models))
        assert isinstance(refused, c.AuthRefused) and refused.code == "invalid_api_key"
        assert refused.detail == "invalid token: signed by an unknown key"
        assert str(refused) == (
            "your token was refused (invalid token: signed by an unknown key); "
            "log in again with `bitinglip login`"
        )

        unknown = await off_thread(lambda: catch(lambda: stream_all(client, "nope", "hi")))
        sent = await off_thread(lambda: gw.raw_error("alice", chat_body("nope")))
        assert isinstance(unknown, c.UnknownModel) and unknown.detail == sent["message"]
        assert unknown.detail == (
            "model 'nope' is not served by any node (available: busy, echo, flaky)"
        )
        assert unknown.available == ["busy", "echo", "flaky"]
        assert str(unknown) == "unknown model 'nope'; available: busy, echo, flaky"

        no_image = await off_thread(lambda: catch(lambda: client.image("echo", "a cat")))
        assert isinstance(no_image, c.UnknownModel)
        assert str(no_image) == (
            "no node makes images with 'echo': "
            "model 'echo' is not served by any node (available: sd)"
        )

        busy = await off_thread(lambda: catch(lambda: stream_all(client, "busy", "hi")))
        sent = await off_thread(lambda: gw.raw_error("alice", chat_body("busy")))
        assert isinstance(busy, c.NoPeerReady) and busy.detail == sent["message"]
        assert busy.detail == "no node can take 'busy' now (ooWNodeZ: draining)"
        assert str(busy) == f"no node has the model ready: {busy.detail}"

        broke = await off_thread(lambda: catch(lambda: read_until_broken(client, gw.gpu)))
        assert isinstance(broke, c.StreamFailed) and broke.code == "internal"
        assert str(broke) == ("the answer broke off: the node failed to run the model")
        for each in (client, stranger):
            each.close()


async def test_a_rate_limit_says_when_to_try_again(tmp_path: Path) -> None:
    async with real_gateway(tmp_path) as gw:
        limited = gw.client("limited")
        assert (await off_thread(lambda: stream_all(limited, "echo", "once")))[0] == "once"
        over = await off_thread(lambda: catch(lambda: stream_all(limited, "echo", "twice")))
        assert isinstance(over, c.RateLimited)
        assert over.detail == "rate limit of 1 requests per minute reached on plan 'tight'"
        assert over.retry_after is not None and 1 <= over.retry_after <= 60
        assert str(over) == (
            f"you are over a rate limit ({over.detail}); try again in {over.retry_after:g} s"
        )
        limited.close()


async def test_login_and_usage(tmp_path: Path) -> None:
    async with real_gateway(tmp_path) as gw:
        anonymous = gw.client()
        wrong = await off_thread(lambda: catch(lambda: anonymous.login("alice", "guessing")))
        assert isinstance(wrong, c.AuthRefused) and wrong.code == "invalid_credentials"
        assert str(wrong) == (
            "the gateway refused that username and password (wrong username or password)"
        )
        login = await off_thread(lambda: anonymous.login("alice", PASSWORD))
        assert login["user"]["username"] == "alice"

        session = gw.client(token=login["token"])
        await off_thread(lambda: stream_all(session, "echo", "count me"))
        usage = await off_thread(lambda: session.usage(days=7))
        assert [(r["model"], r["requests"], r["completion_tokens"]) for r in usage["data"]] == [
            ("echo", 1, 2)
        ]
        assert usage["limits"]["requests_this_minute"] == 1
        for each in (anonymous, session):
            each.close()


def older_gateway() -> FastAPI:
    """A gateway from before models told their task and before ``/v1/peers``."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "echo", "object": "model"}]}

    return app


def not_a_gateway() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def page() -> PlainTextResponse:
        return PlainTextResponse("<html>hello</html>")

    return app


async def test_an_older_gateway_and_a_server_that_is_not_a_gateway() -> None:
    async with served(older_gateway()) as url:
        client = c.GatewayClient(url.removeprefix("http://") + "/")  # host:port is enough
        assert client.url == url
        assert await off_thread(client.chat_models) == ["echo"]  # taken to chat
        missing = await off_thread(lambda: catch(client.peers))
        assert str(missing) == (
            f"the gateway at {url} does not offer /v1/peers: it may be an older version"
        )
        client.close()
    async with served(not_a_gateway()) as url:
        client = c.GatewayClient(url)
        odd = await off_thread(lambda: catch(client.models))
        assert isinstance(odd, c.BadResponse)
        assert str(odd) == f"{url} did not answer /v1/models like a BitingLip gateway"
        client.close()


def test_an_absent_gateway_is_named() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = c.GatewayClient(f"http://127.0.0.1:{port}", "token")
    error = catch(client.models)
    assert isinstance(error, c.Unreachable)
    assert str(error) == (
        f"cannot reach the gateway at http://127.0.0.1:{port}: is `bitinglip up` running?"
    )


def test_a_real_swarm_answers_and_a_dying_node_breaks_the_answer(swarm: LocalSwarmFixture) -> None:
    gateway = swarm.start_gateway()
    boot = [str(gateway["addrs"][0])]  # type: ignore[index]
    swarm.start_node("node-0", boot, ["echo"], ["--echo-delay", "0.1"])
    swarm.wait_ready(["node-0"])
    wait_nodes(swarm.url(), 1)
    client = c.GatewayClient(swarm.url(), swarm.token())
    text, stream = stream_all(client, "echo", "one two")
    assert (text, stream.node) == ("one two", swarm.peer_id("node-0"))
    assert stream.usage["completion_tokens"] == 2

    words = " ".join(f"w{i}" for i in range(100))  # 10 s at this node's pace
    received = ""
    messages = [{"role": "user", "content": words}]
    with pytest.raises(c.StreamFailed) as caught, client.chat_stream("echo", messages) as pieces:
        for piece in pieces:
            if not received:
                swarm.kill("node-0")
            received += piece
    assert received.startswith("w0") and received != words
    broke_off = "the answer broke off: node lost mid-answer: connection to peer lost"
    assert str(caught.value) == broke_off
    client.close()
