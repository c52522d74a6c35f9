"""The gateway's HTTP API, in-process over ``httpx.ASGITransport`` with a fake swarm behind it.

The fake backend answers like a real ``Router``: it hands out a real ``Generation`` around a
real ``Call`` fed from a memory channel with the frames a node would send. One test drives
the app with the official ``openai`` client in-process; tests/test_openai_e2e.py runs that
client against real processes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
import jwt
import openai
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.types import ASGIApp

import keys
from gateway.api.app import create_app
from gateway.api.auth import Authenticator
from gateway.api.inference import NODE_HEADER
from gateway.api.services import Services
from gateway.routing.router import (
    WAIT_AWAY,
    Generation,
    NoPeerReady,
    UnknownModel,
    UpstreamError,
)
from keys.tokens import ALGORITHM, ISSUER
from node.p2p.rpc_client import Call
from protocols import Chunk, End, Error, ErrorCode, GenerateParams, Message

KEY = Ed25519PrivateKey.generate()


def token() -> str:
    """A fresh token for every use: one minted at import could expire in a long run."""
    return keys.issue(KEY, "alice", 3600)


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {token()}"}


PEER = "12D3KooWFakeNodeForTheHttpTests"
GATEWAY = "12D3KooWFakeGateway"
TIMEOUT = 42.0


class FakeBackend:
    """Serves ``echo`` (and its variants) from a scripted node; the rest fail on purpose.

    ``echo``      replies with the last message's words, then usage.
    ``long``      like echo, but stops for length.
    ``flaky``     sends one chunk, then the node reports an error.
    ``vanishing`` sends one chunk, then the connection drops.
    ``busy``      NoPeerReady; ``broken`` / ``refused`` / ``slow`` UpstreamError.
    Anything else is an UnknownModel.
    """

    MODELS = ("echo", "flaky", "long", "vanishing")

    def __init__(self) -> None:
        self.calls: list[tuple[GenerateParams, float]] = []
        self.open = 0
        self.closed = 0

    def serving(self) -> dict[str, list[dict[str, Any]]]:
        peer = {"peer_id": PEER, "state": "ready", "healthy": True, "inflight": 0}
        return {model: [peer] for model in self.MODELS} | {
            "warming": [peer | {"state": "loading", "healthy": False}]
        }

    def _frames(self, params: GenerateParams) -> list[Message]:
        source = params.messages[-1].content if params.messages else params.prompt
        assert source is not None
        words = source.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        chunks: list[Message] = [Chunk(1, {"text": p}) for p in pieces]
        usage = {"prompt_tokens": params.prompt_chars(), "completion_tokens": len(pieces)}
        if params.model == "flaky":
            return [chunks[0], Error(1, ErrorCode.INTERNAL, "GPU fell off the bus")]
        if params.model == "vanishing":
            return [chunks[0]]
        reason = "length" if params.model == "long" else "stop"
        return [*chunks, End(1, usage | {"finish_reason": reason})]

    @asynccontextmanager
    async def generate(self, params: GenerateParams, timeout: float) -> AsyncIterator[Generation]:
        self.calls.append((params, timeout))
        if params.model == "busy":
            raise NoPeerReady("no node can take 'busy' now (a1b2c3d4: ready (draining))")
        if params.model == "broken":
            raise UpstreamError(ErrorCode.INTERNAL, "node crashed")
        if params.model == "refused":
            raise UpstreamError(ErrorCode.BAD_REQUEST, "prompt does not fit the context")
        if params.model == "slow":
            raise UpstreamError(ErrorCode.DEADLINE_EXCEEDED, "deadline exceeded")
        if params.model not in self.MODELS:
            raise UnknownModel(params.model, sorted(self.serving()))
        send, receive = trio.open_memory_channel[Message](math.inf)
        for frame in self._frames(params):
            send.send_nowait(frame)
        send.close()
        call = Call(1, receive)
        first = await anext(call, None)  # as the router does: the node has answered
        self.open += 1
        try:
            yield Generation(PEER, call, first)
        finally:
            self.closed += 1


def make_app(backend: FakeBackend, max_body_bytes: int = 1 << 20) -> ASGIApp:
    services = Services(
        backend=backend,
        auth=Authenticator(KEY.public_key()),
        peer_id=GATEWAY,
        request_timeout=TIMEOUT,
        health=lambda: {"nodes": 1},
    )
    return create_app(services, max_body_bytes=max_body_bytes)


@asynccontextmanager
async def http(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def client(backend: FakeBackend) -> AsyncIterator[httpx.AsyncClient]:
    async with http(make_app(backend)) as c:
        yield c


def chat(model: str = "echo", text: str = "Hello there world", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]} | extra


def assert_error(response: httpx.Response, status: int, kind: str, code: str | None) -> str:
    """Check the OpenAI error shape; return the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == (kind, code)
    assert isinstance(error["message"], str)
    assert error["message"]
    return str(error["message"])


def sse_events(text: str) -> list[Any]:
    """Parse a server-sent event stream of ``data:`` lines."""
    assert text.endswith("\n\n")
    events: list[Any] = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        data = block.removeprefix("data: ")
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


# --- health, models, docs -----------------------------------------------------------------


async def test_health_needs_no_auth(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "peer_id": GATEWAY,
        "models": ["echo", "flaky", "long", "vanishing"],  # not "warming": still loading
        "nodes": 1,
    }


async def test_models_lists_every_model_with_its_peers(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models", headers=auth())
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["echo", "flaky", "long", "vanishing", "warming"]
    warming = body["data"][-1]
    assert warming["object"] == "model"
    assert warming["owned_by"] == "bitinglip"
    assert warming["peers"] == [
        {"peer_id": PEER, "state": "loading", "healthy": False, "inflight": 0}
    ]


async def test_openapi_documents_chat_completions(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    operation = spec["paths"]["/v1/chat/completions"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "messages"} <= set(schema["required"])
    assert "/v1/models" in spec["paths"]
    assert "/health" in spec["paths"]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolves(document: dict[str, Any], ref: str) -> bool:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


async def test_openapi_refs_resolve(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    unresolved = sorted({r for r in _refs(spec) if not _resolves(spec, r)})
    assert unresolved == []


async def test_unknown_route_uses_the_error_shape(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/nothing", headers=auth()), 404, "not_found_error", None)
    response = await client.get("/v1/chat/completions", headers=auth())
    assert_error(response, 405, "server_error", None)


# --- authentication -----------------------------------------------------------------------


def _token(**changes: Any) -> str:
    now = int(time.time())
    claims = {
        "sub": "alice",
        "iat": now,
        "exp": now + 600,
        "aud": "bitinglip",
        "iss": ISSUER,
        "jti": "j",
    } | changes
    return jwt.encode(claims, KEY, algorithm=ALGORITHM)


def _tampered(token: str) -> str:
    head, body, sig = token.split(".")
    return f"{head}.{body}.{sig[:10]}{'A' if sig[10] != 'A' else 'B'}{sig[11:]}"


# Built when each test runs: a token made at import (even a bad one) could expire first,
# and the test would pass for the wrong reason.
BAD_AUTH: list[tuple[str, Callable[[], dict[str, str]], str]] = [
    ("missing", dict, "missing bearer token"),
    ("malformed", lambda: {"Authorization": token()}, "missing bearer token"),
    ("wrong scheme", lambda: {"Authorization": f"Basic {token()}"}, "missing bearer token"),
    ("empty bearer", lambda: {"Authorization": "Bearer   "}, "missing bearer token"),
    ("garbage", lambda: {"Authorization": "Bearer not.a.jwt"}, "invalid token"),
    (
        "expired",
        lambda: {"Authorization": f"Bearer {_token(exp=int(time.time()) - 60)}"},
        "expired",
    ),
    ("tampered", lambda: {"Authorization": f"Bearer {_tampered(token())}"}, "invalid token"),
    ("wrong audience", lambda: {"Authorization": f"Bearer {_token(aud='elsewhere')}"}, "audience"),
    (
        "another key",
        lambda: {"Authorization": f"Bearer {keys.issue(Ed25519PrivateKey.generate(), 'eve', 60)}"},
        "invalid token",
    ),
]


@pytest.mark.parametrize(("what", "make_headers", "says"), BAD_AUTH, ids=[b[0] for b in BAD_AUTH])
async def test_bad_credentials_get_401(
    client: httpx.AsyncClient,
    backend: FakeBackend,
    what: str,
    make_headers: Callable[[], dict[str, str]],
    says: str,
) -> None:
    headers = make_headers()
    for response in (
        await client.post("/v1/chat/completions", json=chat(), headers=headers),
        await client.get("/v1/models", headers=headers),
    ):
        message = assert_error(response, 401, "authentication_error", "invalid_api_key")
        assert says in message
        assert response.json()["error"]["param"] is None
    assert backend.calls == []


async def test_auth_is_checked_before_the_body(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", content=b"{not json")
    assert_error(response, 401, "authentication_error", "invalid_api_key")


async def test_bearer_scheme_is_case_insensitive(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models", headers={"Authorization": f"bearer {token()}"})
    assert response.status_code == 200


# --- request validation -------------------------------------------------------------------


async def test_malformed_json_is_400(client: httpx.AsyncClient, backend: FakeBackend) -> None:
    response = await client.post("/v1/chat/completions", content=b'{"model": ', headers=auth())
    assert "not valid JSON" in assert_error(response, 400, "invalid_request_error", "invalid_json")
    assert backend.calls == []


@pytest.mark.parametrize("body", [b"[1, 2]", b'"hello"', b"null", b"3"])
async def test_non_object_json_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post("/v1/chat/completions", content=body, headers=auth())
    message = assert_error(response, 400, "invalid_request_error", "invalid_request")
    assert "JSON object" in message


async def test_body_is_json_whatever_its_content_type(client: httpx.AsyncClient) -> None:
    form = auth() | {"Content-Type": "application/x-www-form-urlencoded"}
    response = await client.post(
        "/v1/chat/completions", content=json.dumps(chat()).encode(), headers=form
    )
    assert response.status_code == 200, response.text


def _without_messages() -> dict[str, Any]:
    body = chat()
    del body["messages"]
    return body


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("missing messages", _without_messages(), "messages"),
    ("missing model", {"messages": chat()["messages"]}, "model"),
    ("model not a string", chat() | {"model": 5}, "model"),
    ("empty model", chat() | {"model": ""}, "model"),
    ("messages not a list", chat() | {"messages": "hi"}, "messages"),
    ("no messages", chat() | {"messages": []}, "messages"),
    ("bad role", chat() | {"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ("content missing", chat() | {"messages": [{"role": "user"}]}, "messages.0.content"),
    (
        "assistant content missing without tool calls",
        chat() | {"messages": [{"role": "assistant"}, {"role": "user", "content": "x"}]},
        "messages.0.content",
    ),
    ("temperature a word", chat(temperature="hot"), "temperature"),
    ("temperature too high", chat(temperature=2.5), "temperature"),
    ("top_p zero", chat(top_p=0), "top_p"),
    ("max_tokens a word", chat(max_tokens="many"), "max_tokens"),
    ("max_tokens zero", chat(max_tokens=0), "max_tokens"),
    ("max_tokens too big", chat(max_tokens=10**6), "max_tokens"),
    ("n two", chat(n=2), "n"),
    ("negative seed", chat(seed=-1), "seed"),
    ("stream_options wrong", chat(stream_options=[1]), "stream_options"),
]


@pytest.mark.parametrize(("what", "body", "param"), INVALID, ids=[i[0] for i in INVALID])
async def test_invalid_request_names_the_field(
    client: httpx.AsyncClient, backend: FakeBackend, what: str, body: dict[str, Any], param: str
) -> None:
    response = await client.post("/v1/chat/completions", json=body, headers=auth())
    message = assert_error(response, 400, "invalid_request_error", "invalid_request")
    assert response.json()["error"]["param"] == param
    assert message.startswith(f"{param}:")
    assert backend.calls == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (chat(stop=["a", "b", "c", "d", "e"]), "stop"),
        (chat(stop=""), "stop"),
        (chat(text="x" * 200_001), "longer than"),
    ],
    ids=["five stops", "empty stop", "prompt too long"],
)
async def test_generation_limits_are_400(
    client: httpx.AsyncClient, body: dict[str, Any], says: str
) -> None:
    response = await client.post("/v1/chat/completions", json=body, headers=auth())
    assert says in assert_error(response, 400, "invalid_request_error", "invalid_request")


async def test_declared_oversized_body_is_413(backend: FakeBackend) -> None:
    async with http(make_app(backend, max_body_bytes=256)) as small:
        response = await small.post(
            "/v1/chat/completions", json=chat(text="x" * 300), headers=auth()
        )
        assert "256 bytes" in assert_error(response, 413, "invalid_request_error", None)
        ok = await small.post("/v1/chat/completions", json=chat(), headers=auth())
        assert ok.status_code == 200
    assert len(backend.calls) == 1


async def test_streamed_oversized_body_is_413(backend: FakeBackend) -> None:
    payload = json.dumps(chat(text="x" * 600)).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 100):
            yield payload[i : i + 100]

    async with http(make_app(backend, max_body_bytes=256)) as small:
        response = await small.post("/v1/chat/completions", content=chunks(), headers=auth())
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "invalid_request_error", None)
    assert backend.calls == []


# --- routing errors -----------------------------------------------------------------------


async def test_unknown_model_is_404_naming_available_models(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat("gpt-9"), headers=auth())
    message = assert_error(response, 404, "not_found_error", "model_not_found")
    assert response.json()["error"]["param"] == "model"
    assert "gpt-9" in message
    assert "echo" in message
    assert "warming" in message


async def test_no_peer_ready_is_503(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat("busy"), headers=auth())
    assert "draining" in assert_error(response, 503, "server_error", "no_peer_ready")
    assert response.headers["Retry-After"] == str(WAIT_AWAY)  # the router's estimate


@pytest.mark.parametrize(
    ("model", "status", "kind", "code"),
    [
        ("broken", 502, "server_error", "internal"),
        ("refused", 400, "invalid_request_error", "bad_request"),
        ("slow", 504, "server_error", "deadline_exceeded"),
    ],
)
async def test_upstream_errors_map_to_statuses(
    client: httpx.AsyncClient, model: str, status: int, kind: str, code: str
) -> None:
    for stream in (False, True):
        response = await client.post(
            "/v1/chat/completions", json=chat(model, stream=stream), headers=auth()
        )
        assert_error(response, status, kind, code)


# --- completions --------------------------------------------------------------------------


async def test_completion_shape(client: httpx.AsyncClient, backend: FakeBackend) -> None:
    response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert response.status_code == 200, response.text
    assert response.headers[NODE_HEADER] == PEER
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "echo"
    assert isinstance(body["created"], int)
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there world"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {"prompt_tokens": 17, "completion_tokens": 3, "total_tokens": 20}
    assert (backend.open, backend.closed) == (1, 1)


async def test_finish_reason_comes_from_the_node(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat("long"), headers=auth())
    assert response.json()["choices"][0]["finish_reason"] == "length"


async def test_request_becomes_generate_params(
    client: httpx.AsyncClient, backend: FakeBackend
) -> None:
    body = {
        "model": "echo",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "you"}],
            },
        ],
        "max_tokens": 10,
        "max_completion_tokens": 20,
        "temperature": 0.25,
        "top_p": 0.5,
        "stop": "\n",
        "seed": 7,
        "user": "ignored-extra-field",
        "logprobs": False,
    }
    response = await client.post("/v1/chat/completions", json=body, headers=auth())
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "hi you"
    ((params, timeout),) = backend.calls
    assert timeout == TIMEOUT
    assert params.messages is not None
    assert [(m.role, m.content) for m in params.messages] == [
        ("system", "be brief"),
        ("user", "hi you"),
    ]
    assert (params.max_tokens, params.temperature, params.top_p) == (20, 0.25, 0.5)
    assert (params.stop, params.seed, params.prompt) == (["\n"], 7, None)


async def test_default_max_tokens(client: httpx.AsyncClient, backend: FakeBackend) -> None:
    await client.post("/v1/chat/completions", json=chat(max_tokens=None), headers=auth())
    await client.post("/v1/chat/completions", json=chat(max_tokens=5), headers=auth())
    assert [p.max_tokens for p, _ in backend.calls] == [256, 5]


@pytest.mark.parametrize("model", ["flaky", "vanishing"])
async def test_failure_mid_answer_is_502(
    client: httpx.AsyncClient, backend: FakeBackend, model: str
) -> None:
    response = await client.post("/v1/chat/completions", json=chat(model), headers=auth())
    code = "internal" if model == "flaky" else "unavailable"
    message = assert_error(response, 502, "server_error", code)
    # The node's own words for an internal failure stay in the gateway's log.
    said = "the node failed to run the model" if model == "flaky" else "node lost mid-answer"
    assert said in message
    assert (backend.open, backend.closed) == (1, 1)


# --- streaming ----------------------------------------------------------------------------


async def _stream(client: httpx.AsyncClient, body: dict[str, Any]) -> list[Any]:
    response = await client.post(
        "/v1/chat/completions", json=body | {"stream": True}, headers=auth()
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers[NODE_HEADER] == PEER
    assert response.headers["cache-control"] == "no-cache"
    return sse_events(response.text)


async def test_stream_sends_role_then_content_then_finish_then_done(
    client: httpx.AsyncClient, backend: FakeBackend
) -> None:
    events = await _stream(client, chat())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["model"] == "echo" for c in chunks)
    assert chunks[0]["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    content = chunks[1:-1]
    assert [c["choices"][0]["delta"]["content"] for c in content] == ["Hello", " there", " world"]
    assert all(c["choices"][0]["finish_reason"] is None for c in content)
    assert chunks[-1]["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    ]
    assert all("usage" not in c for c in chunks)
    assert (backend.open, backend.closed) == (1, 1)


async def test_stream_include_usage_adds_a_usage_chunk(client: httpx.AsyncClient) -> None:
    events = await _stream(client, chat("long", stream_options={"include_usage": True}))
    assert events[-1] == "[DONE]"
    usage = events[-2]
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 17, "completion_tokens": 3, "total_tokens": 20}
    assert events[-3]["choices"][0]["finish_reason"] == "length"


async def test_stream_include_usage_false_adds_nothing(client: httpx.AsyncClient) -> None:
    events = await _stream(client, chat(stream_options={"include_usage": False}))
    assert all("usage" not in e for e in events[:-1])


@pytest.mark.parametrize(("model", "code"), [("flaky", "internal"), ("vanishing", "unavailable")])
async def test_failure_mid_stream_sends_an_error_event_then_done(
    client: httpx.AsyncClient, backend: FakeBackend, model: str, code: str
) -> None:
    events = await _stream(client, chat(model))
    assert len(events) == 4
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[1]["choices"][0]["delta"] == {"content": "Hello"}
    error = events[2]["error"]
    assert (error["type"], error["code"]) == ("server_error", code)
    said = "the node failed to run the model" if model == "flaky" else "node lost mid-answer"
    assert said in error["message"]
    assert events[3] == "[DONE]"
    assert (backend.open, backend.closed) == (1, 1)


# --- the official openai client -----------------------------------------------------------


@asynccontextmanager
async def openai_client(
    backend: FakeBackend, api_key: str | None = None
) -> AsyncIterator[openai.AsyncOpenAI]:
    transport = httpx.ASGITransport(app=make_app(backend))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http_client:
        # openai types http_client as its httpx2 fork's client but accepts httpx's at runtime.
        yield openai.AsyncOpenAI(
            base_url="http://test/v1",
            api_key=api_key or token(),
            http_client=cast(Any, http_client),
            max_retries=0,
        )


async def test_openai_sdk_in_process_bad_token_never_reaches_a_node(backend: FakeBackend) -> None:
    async with openai_client(backend, api_key=_tampered(token())) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "hi"}]
            )
    assert caught.value.status_code == 401
    assert backend.calls == []


async def test_interactive_docs_need_no_network(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text  # every asset is served by the gateway itself
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert asset in page.text
        served = await client.get(f"/static-offline-docs/{asset}")
        assert served.status_code == 200 and len(served.content) > 10_000
    assert (await client.get("/redoc")).status_code == 200
