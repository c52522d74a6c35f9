"""Prometheus metrics: the gateway's ``/metrics`` in-process and a node's metrics server alone
(real processes: tests/integration/test_metrics.py)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import keys
from gateway.accounts.metering import Outcome
from gateway.api.app import create_app
from gateway.api.auth import Authenticator
from gateway.api.errors import ApiError
from gateway.api.services import Services
from gateway.routing.peer_table import PeerTable
from node.cli.main import build_parser
from node.p2p.config import load
from node.p2p.rpc_server import Caller, Emit, RpcError
from node.p2p.streams import StreamBroken
from node.worker.config import NodeConfig
from node.worker.metrics import NodeMetrics
from node.worker.runners import EchoRunner
from protocols import ErrorCode, Hardware, Load
from tests.unit.gateway.api.test_http import KEY, FakeBackend, auth, chat, http
from tests.unit.gateway.routing.test_peer_table import record
from tests.unit.gateway.routing.test_router import node, swarm_of

GIB = 1 << 30

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# --- the gateway, in-process --------------------------------------------------------------


class Refuser:
    """A meter that refuses one user, as a rate limiter would."""

    async def admit(self, claims: keys.Claims, outcome: Outcome) -> None:
        if claims.sub == "greedy":
            raise ApiError(429, "slow down", "rate_limited", headers={"Retry-After": "7"})

    async def record(self, claims: keys.Claims, outcome: Outcome) -> None:
        return None

    def headers(self, claims: keys.Claims) -> dict[str, str]:
        return {}


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[httpx.AsyncClient, PeerTable]]:
    services = Services(
        backend=FakeBackend(), auth=Authenticator(KEY.public_key()), meters=[Refuser()]
    )
    table = PeerTable()
    now = time.time()
    busy = Load(inflight=2, queued=1, capacity=4, tokens_per_s=12.5, memory_free=3 * GIB)
    gpu = Hardware("cuda", "Test GPU", "VRAM", 8 * GIB, 8 * GIB)
    table.upsert(replace(record("12D3KooWBusy", issued_at=now), hardware=gpu), now=now)
    table.update_load("12D3KooWBusy", busy, now=now)
    table.upsert(record("12D3KooWDrains", issued_at=now), now=now)
    table.update_load("12D3KooWDrains", Load(0, 0, 1, 0.0, 0, draining=True), now=now)
    table.upsert(record("12D3KooWSilent", issued_at=now), now=now)  # no load update yet
    services.metrics.observe_swarm(table, lambda: 0)
    async with http(create_app(services)) as client:
        yield client, table


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def test_gateway_counts_requests_calls_tokens_and_refusals(
    gateway: tuple[httpx.AsyncClient, PeerTable],
) -> None:
    client, _ = gateway
    greedy = {"Authorization": f"Bearer {keys.issue(KEY, 'greedy', 60)}"}
    for _ in range(2):
        assert (await client.post("/v1/chat/completions", json=chat(), headers=auth())).is_success
    streamed = await client.post("/v1/chat/completions", json=chat(stream=True), headers=auth())
    assert streamed.status_code == 200
    unknown = await client.post("/v1/chat/completions", json=chat("x" * 200), headers=auth())
    assert unknown.status_code == 404
    refused = await client.post("/v1/chat/completions", json=chat(), headers=greedy)
    assert refused.status_code == 429
    assert (await client.get("/v1/not/a/route/42")).status_code == 404
    for page in ("/", "/static/app.js", "/openapi.json"):
        assert (await client.get(page)).status_code == 200

    samples = await scrape(client)
    http_count = "bitinglip_gateway_http_request_duration_seconds_count"
    chat_route = {"route": "/v1/chat/completions", "method": "POST"}
    assert value(samples, http_count, **chat_route, status="200") == 3
    assert value(samples, http_count, **chat_route, status="404") == 1
    assert value(samples, http_count, **chat_route, status="429") == 1
    # A made-up path is one series, not one per path.
    assert value(samples, http_count, route="unmatched", method="GET", status="404") == 1
    assert not any("/v1/not" in str(labels) for _, labels in samples)
    for route in ("/", "/static", "/openapi.json"):
        assert value(samples, http_count, route=route, method="GET", status="200") == 1
    assert value(samples, "bitinglip_gateway_rate_limited_total", route=chat_route["route"]) == 1

    calls = "bitinglip_gateway_inference_duration_seconds_count"
    assert value(samples, calls, kind="chat", model="echo", status="200") == 3
    assert value(samples, calls, kind="chat", model="echo", status="429") == 1
    # A model nobody serves is "other": clients cannot mint label values.
    assert value(samples, calls, kind="chat", model="other", status="404") == 1
    assert value(samples, "bitinglip_gateway_completion_tokens_total", model="echo") == 9
    assert value(samples, "bitinglip_gateway_prompt_tokens_total", model="echo") == 3 * 17
    sums = value(samples, "bitinglip_gateway_inference_duration_seconds_sum", kind="chat",
                 model="echo", status="200")  # fmt: skip
    assert 0 < sums < 5


async def test_gateway_reads_the_swarm_at_scrape_time(
    gateway: tuple[httpx.AsyncClient, PeerTable],
) -> None:
    client, table = gateway
    samples = await scrape(client)
    assert value(samples, "bitinglip_gateway_peers", state="healthy") == 1
    assert value(samples, "bitinglip_gateway_peers", state="draining") == 1
    assert value(samples, "bitinglip_gateway_peers", state="suspect") == 1
    busy = {"peer": "12D3KooWBusy"}
    assert value(samples, "bitinglip_gateway_peer_inflight", **busy) == 2
    assert value(samples, "bitinglip_gateway_peer_queued", **busy) == 1
    assert value(samples, "bitinglip_gateway_peer_capacity", **busy) == 4
    assert value(samples, "bitinglip_gateway_peer_tokens_per_second", **busy) == 12.5
    # Memory is labelled with its kind: the GPU node's VRAM, the CPU nodes' RAM.
    vram = busy | {"kind": "VRAM"}
    assert value(samples, "bitinglip_gateway_peer_memory_free_bytes", **vram) == 3 * GIB
    assert value(samples, "bitinglip_gateway_peer_memory_total_bytes", **vram) == 8 * GIB
    free = "bitinglip_gateway_peer_memory_free_bytes"
    labelled = [dict(labels) for name, labels in samples if name == free]
    assert {"peer": "12D3KooWDrains", "kind": "RAM"} in labelled
    assert {"peer": "12D3KooWBusy", "kind": "RAM"} not in labelled

    table.remove("12D3KooWBusy")
    later = await scrape(client)
    assert ("bitinglip_gateway_peer_inflight", frozenset(busy.items())) not in later
    assert value(later, "bitinglip_gateway_peers", state="healthy") == 0


async def test_routing_retries_count_the_calls_a_node_did_not_take() -> None:
    # A real router over two real node services: peer-a ranks first (same load, lower id)
    # but began draining after the gateway last heard its load, so it refuses every call,
    # which then goes to peer-b.
    draining, healthy = node({"echo": EchoRunner()}), node({"echo": EchoRunner()})
    async with swarm_of({"peer-a": draining, "peer-b": healthy}) as router:
        draining.roster.drain()
        services = Services(backend=router, auth=Authenticator(KEY.public_key()))
        services.metrics.observe_swarm(router.table, lambda: router.retries)  # as a gateway does
        async with http(create_app(services)) as client:
            retries = []
            for _ in range(2):
                reply = await client.post("/v1/chat/completions", json=chat(), headers=auth())
                assert reply.status_code == 200, reply.text
                assert reply.headers["x-bitinglip-node"] == "peer-b"
                samples = await scrape(client)
                retries.append(value(samples, "bitinglip_gateway_routing_retries_total"))
    assert retries == [1, 2]


async def test_each_app_has_its_own_registry() -> None:
    apps = [
        create_app(Services(backend=FakeBackend(), auth=Authenticator(KEY.public_key())))
        for _ in range(2)
    ]
    async with http(apps[0]) as first, http(apps[1]) as second:
        await first.post("/v1/chat/completions", json=chat(), headers=auth())
        count = "bitinglip_gateway_inference_duration_seconds_count"
        labels = {"kind": "chat", "model": "echo", "status": "200"}
        assert value(await scrape(first), count, **labels) == 1
        assert value(await scrape(second), count, **labels) == 0


# --- a node's metrics, without a swarm ----------------------------------------------------


def node_metrics(load: Load) -> NodeMetrics:
    return NodeMetrics(
        lambda: load,
        lambda: Hardware("cuda", "Test GPU", "VRAM", 8 * GIB, 6 * GIB),
        lambda: {"echo"},
        {"peer_id": "12D3KooWNode", "version": "0.1.0"},
    )


async def test_node_counts_calls_by_method_and_outcome() -> None:
    metrics = node_metrics(Load(1, 2, 4, 30.0, 6 * GIB))

    async def generate(params: dict[str, Any], caller: Caller, emit: Emit) -> dict[str, Any]:
        await emit({"text": "hi"})
        await emit({"text": " there"})
        return {"finish_reason": "stop", "prompt_tokens": 5, "completion_tokens": 2}

    async def status(params: dict[str, Any], caller: Caller, emit: Emit) -> dict[str, Any]:
        raise RpcError(ErrorCode.OVERLOADED, "full")

    async def generate_image(params: dict[str, Any], caller: Caller, emit: Emit) -> dict[str, Any]:
        await emit({"png": b"..."})
        return {"images": 3, "seed": 7}

    handlers = metrics.instrument(
        {"generate": generate, "generate_image": generate_image, "status": status}
    )
    emitted: list[dict[str, Any]] = []

    async def emit(data: dict[str, Any]) -> None:
        emitted.append(data)

    caller = Caller("12D3KooWGateway", "gateway")
    for model in ("echo", "echo", "made-up"):
        await handlers["generate"]({"model": model}, caller, emit)
    await handlers["generate_image"]({"model": "echo"}, caller, emit)
    with pytest.raises(RpcError):
        await handlers["status"]({}, caller, emit)
    assert len(emitted) == 7

    get = metrics.registry.get_sample_value
    assert get("bitinglip_node_requests_total", {"method": "generate", "status": "ok"}) == 3
    assert get("bitinglip_node_requests_total", {"method": "status", "status": "overloaded"}) == 1
    assert get("bitinglip_node_completion_tokens_total", {"model": "echo"}) == 4
    assert get("bitinglip_node_prompt_tokens_total", {"model": "other"}) == 5
    assert get("bitinglip_node_generation_duration_seconds_count", {"model": "echo"}) == 3
    assert get("bitinglip_node_images_total", {"model": "echo"}) == 3
    assert get("bitinglip_node_time_to_first_token_seconds_count", {"model": "echo"}) == 2
    assert get("bitinglip_node_queued") == 2
    assert get("bitinglip_node_capacity") == 4
    assert get("bitinglip_node_tokens_per_second") == 30
    assert get("bitinglip_node_memory_total_bytes", {"kind": "VRAM"}) == 8 * GIB
    assert get("bitinglip_node_memory_free_bytes", {"kind": "VRAM"}) == 6 * GIB
    assert get("bitinglip_node_memory_total_bytes", {"kind": "RAM"}) is None
    assert get("bitinglip_node_info", {"peer_id": "12D3KooWNode", "version": "0.1.0"}) == 1


async def test_a_call_whose_caller_left_counts_as_cancelled() -> None:
    """However the leaving reaches the handler: cancelled inside a nursery (a group of
    cancellations), or the stream broken under an answer; a real failure stays internal."""
    metrics = node_metrics(Load(0, 0, 4, 0.0, 6 * GIB))

    async def in_a_nursery(params: dict[str, Any], caller: Caller, emit: Emit) -> dict[str, Any]:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            await trio.sleep_forever()
        raise AssertionError("never ends by itself")

    async def broken(params: dict[str, Any], caller: Caller, emit: Emit) -> dict[str, Any]:
        raise StreamBroken("the caller is gone")

    async def failing(params: dict[str, Any], caller: Caller, emit: Emit) -> dict[str, Any]:
        raise KeyError("bug")

    handlers = metrics.instrument({"generate": in_a_nursery, "speak": broken, "status": failing})
    caller = Caller("12D3KooWGateway", "gateway")

    async def emit(data: dict[str, Any]) -> None:
        pass

    with trio.move_on_after(0.01):
        await handlers["generate"]({"model": "echo"}, caller, emit)
    with pytest.raises(StreamBroken):
        await handlers["speak"]({"model": "echo"}, caller, emit)
    with pytest.raises(KeyError):
        await handlers["status"]({}, caller, emit)
    get = metrics.registry.get_sample_value
    assert get("bitinglip_node_requests_total", {"method": "generate", "status": "cancelled"}) == 1
    assert get("bitinglip_node_requests_total", {"method": "speak", "status": "cancelled"}) == 1
    assert get("bitinglip_node_requests_total", {"method": "status", "status": "internal"}) == 1


async def test_node_metrics_server_binds_port_zero() -> None:
    metrics = node_metrics(Load(0, 0, 1, 0.0, 0))
    async with trio.open_nursery() as nursery:
        url = await nursery.start(metrics.serve, "127.0.0.1", 0)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url)
        async with httpx.AsyncClient() as client:
            scraped = await client.get(url)
            elsewhere = await client.get(url.removesuffix("metrics") + "other")
        nursery.cancel_scope.cancel()
    assert scraped.status_code == 200
    assert value(parse(scraped.text), "bitinglip_node_capacity") == 1
    assert elsewhere.status_code == 404


def test_metrics_port_from_flag_environment_and_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert build_parser().parse_args(["node", "start", "--metrics-port", "0"]).metrics_port == 0
    monkeypatch.delenv("BITINGLIP_NODE_METRICS_PORT", raising=False)
    assert load(NodeConfig, "node", {}).metrics_port is None  # off unless asked for
    monkeypatch.setenv("BITINGLIP_NODE_METRICS_PORT", "9100")
    assert load(NodeConfig, "node", {}).metrics_port == 9100
    file = tmp_path / "node.toml"
    file.write_text("[node]\nmetrics_port = 9200\n")
    monkeypatch.delenv("BITINGLIP_NODE_METRICS_PORT")
    assert load(NodeConfig, "node", {}, file).metrics_port == 9200
    assert load(NodeConfig, "node", {"metrics_port": 0}, file).metrics_port == 0
