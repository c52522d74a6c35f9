"""Real peer processes on 127.0.0.1: discovery through the DHT, routing, failover."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from tests.integration.conftest import LocalSwarmFixture


def chat(url: str, token: str, text: str, **extra: Any) -> httpx.Response:
    body = {"model": "echo", "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(
        f"{url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def wait_nodes(url: str, count: int, timeout: float = 60) -> dict[str, Any]:
    """Until the gateway sees ``count`` nodes and can route to at least one model."""
    deadline = time.monotonic() + timeout
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        health = httpx.get(f"{url}/health", timeout=5).json()
        if health["nodes"] == count and (count == 0 or health["models"]):
            return health
        time.sleep(0.2)
    raise AssertionError(f"gateway sees {health.get('nodes')} nodes, expected {count}")


def wait_busy(url: str, token: str, peer: str, timeout: float = 30) -> None:
    """Until the gateway's view shows ``peer`` with a call running and every other node
    healthy (on a loaded machine a heartbeat can be late, and a node that missed three
    is passed over until the next one comes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = httpx.get(
            f"{url}/v1/peers", headers={"Authorization": f"Bearer {token}"}, timeout=5
        ).json()
        nodes = [p for p in reply["data"] if p["role"] == "node"]
        busy = [p for p in nodes if p["peer_id"] == peer and p["load"]]
        if (
            busy
            and busy[0]["load"]["inflight"] >= 1
            and all(p["healthy"] for p in nodes if p["peer_id"] != peer)
        ):
            return
        time.sleep(0.05)
    raise AssertionError(f"the gateway never saw {peer} busy and the others healthy")


def test_nodes_found_through_the_dht_and_answer(swarm: LocalSwarmFixture) -> None:
    # node-1 knows only node-0, and the gateway knows only node-1: no registry, no
    # full mesh of bootstrap addresses; the DHT must tie them together.
    swarm.start_node("node-0", [], ["echo"])
    swarm.wait_ready(["node-0"])
    swarm.start_node("node-1", [swarm.addr("node-0")], ["echo"])
    swarm.wait_ready(["node-1"])
    swarm.start_gateway(bootstrap=[swarm.addr("node-1")])
    url, token = swarm.url(), swarm.token()
    wait_nodes(url, 2)

    reply = chat(url, token, "hello swarm")
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "hello swarm"
    assert reply.headers["x-bitinglip-node"] in {swarm.peer_id("node-0"), swarm.peer_id("node-1")}
    models = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"}).json()
    assert [m["id"] for m in models["data"]] == ["echo"]
    assert len(models["data"][0]["peers"]) == 2


def test_busy_node_is_passed_over_and_dead_node_drops_out(swarm: LocalSwarmFixture) -> None:
    gateway = swarm.start_gateway()
    boot = [str(gateway["addrs"][0])]  # type: ignore[index]
    for name in ("node-0", "node-1"):
        swarm.start_node(name, boot, ["echo"], ["--echo-delay", "0.05", "--capacity", "1"])
    swarm.wait_ready(["node-0", "node-1"])
    url, token = swarm.url(), swarm.token()
    wait_nodes(url, 2)

    # Hold one node busy with a long streamed answer...
    busy: dict[str, str] = {}
    first_token = threading.Event()

    def long_call() -> None:
        body = {
            "model": "echo",
            "stream": True,
            "messages": [{"role": "user", "content": "w " * 60}],
        }
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", json=body,
            headers={"Authorization": f"Bearer {token}"}, timeout=30,
        ) as response:  # fmt: skip
            busy["node"] = response.headers["x-bitinglip-node"]
            for _ in response.iter_lines():
                first_token.set()

    worker = threading.Thread(target=long_call)
    worker.start()
    assert first_token.wait(30)
    wait_busy(url, token, busy["node"])  # the node's own load report has reached the gateway
    # ...and every short call meanwhile goes to the idle one.
    served = {chat(url, token, "quick").headers["x-bitinglip-node"] for _ in range(3)}
    worker.join()
    assert busy["node"] not in served and len(served) == 1

    # Kill one node outright: calls keep succeeding on the other, and it leaves routing.
    victim = "node-0"
    swarm.kill(victim)
    for _ in range(5):
        reply = chat(url, token, "still there?")
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-bitinglip-node"] == swarm.peer_id("node-1")
    health = wait_nodes(url, 1)
    assert health["nodes"] == 1
