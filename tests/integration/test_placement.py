"""Real gateway and nodes: a model that is on one node's disk but loaded nowhere is loaded
there once calls for it wait at the gateway, serves them, and is unloaded once idle."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_swarm import wait_nodes

IDLE_UNLOAD = 3.0


def ask(url: str, token: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "are you there"}]}
    auth = {"Authorization": f"Bearer {token}"}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=auth, timeout=60)


def models_of(swarm: LocalSwarmFixture, name: str) -> list[str]:
    models = swarm.local.status(name).get("models", [])
    assert isinstance(models, list)
    return [str(m) for m in models]


def test_a_wanted_model_is_loaded_where_allowed_and_unloaded_once_idle(
    swarm: LocalSwarmFixture, tmp_path: Path
) -> None:
    gateway = swarm.start_gateway()
    boot = [str(gateway["addrs"][0])]  # type: ignore[index]
    policy = tmp_path / "placement.toml"
    policy.write_text(
        "[node.placement]\n"
        'allowed = ["echo-spare"]\n'
        f"idle_unload = {IDLE_UNLOAD}\n"
        "wanted_for = 0.5\n"
    )
    swarm.start_node("node-0", boot, ["echo"])
    swarm.start_node("node-1", boot, ["echo"], ["--config", str(policy)])
    swarm.wait_ready(["node-0", "node-1"])
    url, token = swarm.url(), swarm.token()
    wait_nodes(url, 2)
    listed = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert "echo-spare" not in [m["id"] for m in listed.json()["data"]]

    # Loaded nowhere, but node-1 says it could: the call waits, node-1 hears of it from the
    # gateway's demand, loads it (an echo model loads at once) and the call is answered.
    started = time.monotonic()
    reply = ask(url, token, "echo-spare")
    waited = time.monotonic() - started
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "are you there"
    assert float(reply.headers["x-queue-wait"]) > 0
    assert waited < 8, waited
    assert "echo-spare" in models_of(swarm, "node-1")
    assert "echo-spare" not in models_of(swarm, "node-0")  # no placement policy: never

    # Served again at once while loaded; then idle, it is unloaded, and node-1 still
    # offers to load it again.
    again = ask(url, token, "echo-spare")
    assert again.status_code == 200 and float(again.headers["x-queue-wait"]) < 1
    idle_since = time.monotonic()
    while "echo-spare" in models_of(swarm, "node-1"):
        assert time.monotonic() - idle_since < IDLE_UNLOAD + 5, "never unloaded"
        time.sleep(0.2)
    assert time.monotonic() - idle_since >= IDLE_UNLOAD - 0.5
    assert ask(url, token, "echo-spare").status_code == 200
