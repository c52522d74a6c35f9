"""A node started with a ``[[node.engines]]`` table serves that model through the engine,
and the gateway routes to it like to any other model; a bad table stops the node at once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_swarm import chat, wait_nodes

FAKE = Path(__file__).with_name("fake_engine.py")


def engine_table(model: str) -> str:
    command = [sys.executable, str(FAKE), "--port", "{port}", "--model", "served-name"]
    return (
        "[[node.engines]]\n"
        f'id = "{model}"\n'
        'engine = "vllm"\n'
        f"command = {json.dumps(command)}\n"
        "slots = 3\n"
        "ready_timeout = 60\n"
    )


def test_a_configured_engine_serves_through_the_swarm(
    swarm: LocalSwarmFixture, tmp_path: Path
) -> None:
    config = tmp_path / "node.toml"
    config.write_text(engine_table("big-model"))
    gateway = swarm.start_gateway()
    swarm.start_node("node-0", [str(gateway["addrs"][0])], [], ["--config", str(config)])  # type: ignore[index]
    swarm.wait_ready(["node-0"])
    url, token = swarm.url(), swarm.token()
    wait_nodes(url, 1)

    reply = chat(url, token, "through the engine", model="big-model")
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "through the engine"
    assert reply.headers["x-bitinglip-node"] == swarm.peer_id("node-0")
    models = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"}).json()
    assert [m["id"] for m in models["data"]] == ["big-model"]  # no default model besides it
    peers = httpx.get(f"{url}/v1/peers", headers={"Authorization": f"Bearer {token}"}).json()
    node = next(p for p in peers["data"] if p["role"] == "node")
    assert [(m["id"], m["state"]) for m in node["models"]] == [("big-model", "ready")]
    assert node["load"]["capacity"] == 3  # the engine's slots are the node's capacity


def test_a_bad_engine_table_stops_the_node_with_the_reason(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('[[node.engines]]\nid = "x"\ncommand = ["serve"]\nslots = "many"\n')
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "node", "start", "--config", str(config),
         "--data-dir", str(tmp_path / "data"), "--listen", "/ip4/127.0.0.1/tcp/0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "engine 'x': slots must be a whole number" in done.stderr
