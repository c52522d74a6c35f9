"""``bitinglip peers`` and ``GET /v1/peers`` against a real local swarm on 127.0.0.1.

One swarm (a gateway and two echo nodes) serves the whole module; each test runs the
command as a person would, in its own process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pexpect
import pytest

import keys
from node.cli.up import write_swarm_file
from tests.integration.conftest import LocalSwarmFixture

NODES = ("node-0", "node-1")


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSwarmFixture]:
    s = LocalSwarmFixture(tmp_path_factory.mktemp("peers") / "swarm")
    try:
        gateway = s.start_gateway()
        boot = [str(gateway["addrs"][0])]  # type: ignore[index]
        for name in NODES:
            s.start_node(name, boot, ["echo"], ["--echo-delay", "0.05"])
        s.wait_ready(list(NODES))
        deadline = time.monotonic() + 60
        while (health := httpx.get(f"{s.url()}/health", timeout=5).json())["nodes"] < len(
            NODES
        ) or not health["models"]:
            assert time.monotonic() < deadline, "the gateway did not find both nodes"
            time.sleep(0.2)
        yield s
    finally:
        s.local.stop()


@pytest.fixture(scope="module")
def client_dir(swarm: LocalSwarmFixture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("client")
    keys.provision(directory, swarm.data_dir, "client")
    return directory


def env() -> dict[str, str]:
    """A wide terminal, and no token or saved login from whoever runs the tests."""
    home = Path(os.environ.get("TMPDIR", "/tmp")) / "bitinglip-peers-test-home"
    base = {k: v for k, v in os.environ.items() if k != "BITINGLIP_TOKEN"}
    return base | {"COLUMNS": "200", "BITINGLIP_HOME": str(home), "XDG_CONFIG_HOME": str(home)}


def peers(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "node.cli", "peers", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env())


def via_gateway(swarm: LocalSwarmFixture, *args: str) -> subprocess.CompletedProcess[str]:
    return peers("--gateway", swarm.url(), "--token", swarm.token(), *args)


def node_ids(swarm: LocalSwarmFixture) -> set[str]:
    return {swarm.peer_id(name) for name in NODES}


def by_id(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["peer_id"]: p for p in body["peers"]}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_json_through_the_gateway_lists_nodes_with_models_and_load(
    swarm: LocalSwarmFixture,
) -> None:
    result = via_gateway(swarm, "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    found = by_id(body)
    assert found[swarm.peer_id("gateway")]["role"] == "gateway"
    assert node_ids(swarm) <= set(found)
    for peer in node_ids(swarm):
        node = found[peer]
        assert node["role"] == "node" and node["healthy"]
        assert [(m["id"], m["state"]) for m in node["models"]] == [("echo", "ready")]
        assert node["load"]["capacity"] >= 1 and node["load"]["inflight"] == 0
        assert node["hardware"]["backend"] and node["hardware"]["memory_total"] > 0
    assert body["summary"]["nodes"] == 2 and body["summary"]["models"] == {"echo": 2}


def test_light_client_sees_both_nodes_and_their_live_load(
    swarm: LocalSwarmFixture, client_dir: Path
) -> None:
    # Keep one node busy with a slow streamed answer while the client looks.
    streaming, done = threading.Event(), threading.Event()

    def slow_call() -> None:
        body = {
            "model": "echo",
            "stream": True,
            "messages": [{"role": "user", "content": "w " * 200}],
        }
        headers = {"Authorization": f"Bearer {swarm.token()}"}
        url = f"{swarm.url()}/v1/chat/completions"
        with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as response:
            for _ in response.iter_lines():
                streaming.set()
                if done.is_set():
                    return  # leaving cancels the call on the node

    worker = threading.Thread(target=slow_call)
    worker.start()
    try:
        assert streaming.wait(10)
        result = peers(
            "--bootstrap", swarm.addr("gateway"), "--data-dir", str(client_dir), "--json"
        )
    finally:
        done.set()
        worker.join()
    assert result.returncode == 0, result.stderr
    found = by_id(json.loads(result.stdout))
    assert node_ids(swarm) <= set(found)
    nodes = [found[p] for p in node_ids(swarm)]
    assert all(n["healthy"] and n["models"][0]["id"] == "echo" for n in nodes)
    assert sorted(n["load"]["inflight"] for n in nodes) == [0, 1]
    assert all(n["rtt_ms"] is not None for n in nodes)
    # The gateway advertises itself too, so the client finds it without asking it.
    assert found[swarm.peer_id("gateway")]["role"] == "gateway"


def test_model_filter(swarm: LocalSwarmFixture) -> None:
    result = via_gateway(swarm, "--json", "--model", "echo")
    assert result.returncode == 0, result.stderr
    assert set(by_id(json.loads(result.stdout))) == node_ids(swarm)

    missing = via_gateway(swarm, "--model", "no-such-model")
    assert missing.returncode == 1 and missing.stdout == ""
    assert "no peer lists model 'no-such-model'" in missing.stderr


def test_the_table_for_people(swarm: LocalSwarmFixture) -> None:
    result = via_gateway(swarm)
    assert result.returncode == 0, result.stderr
    for name in ("gateway", *NODES):
        assert swarm.peer_id(name)[-8:] in result.stdout
    assert "echo" in result.stdout and "0/0/" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("3 peers (1 gateway, 2 nodes, 3 healthy)")
    assert "models ready: echo (2 peers)" in result.stdout


def test_with_no_flags_it_finds_the_swarm_that_up_started(swarm: LocalSwarmFixture) -> None:
    write_swarm_file(swarm.local, ["gateway", *NODES], swarm.url())
    try:
        result = peers("--data-dir", str(swarm.data_dir), "--json")
    finally:
        (swarm.data_dir / "swarm.json").unlink()
    assert result.returncode == 0, result.stderr
    assert node_ids(swarm) <= set(by_id(json.loads(result.stdout)))


def test_nothing_reachable_fails_with_a_sentence(
    swarm: LocalSwarmFixture, client_dir: Path
) -> None:
    dead = f"/ip4/127.0.0.1/tcp/{closed_port()}/p2p/{swarm.peer_id('gateway')}"
    result = peers("--bootstrap", dead, "--data-dir", str(client_dir))
    assert result.returncode == 1 and result.stdout == ""
    assert "cannot reach the swarm" in result.stderr and dead in result.stderr
    assert "Traceback" not in result.stderr

    result = peers("--gateway", f"http://127.0.0.1:{closed_port()}", "--token", "t")
    assert result.returncode == 1 and "cannot reach the gateway" in result.stderr

    result = via_gateway(swarm, "--token", "not-a-token")
    assert result.returncode == 1 and "refused the token" in result.stderr


def test_watch_refreshes_in_place_until_ctrl_c(swarm: LocalSwarmFixture) -> None:
    args = ["-m", "node.cli", "peers", "--watch", "0.3"]
    args += ["--gateway", swarm.url(), "--token", swarm.token()]
    child = pexpect.spawn(
        sys.executable, args, env=env(), dimensions=(40, 200), timeout=20, encoding="utf-8"
    )
    try:
        child.expect("models ready: echo")
        # Redrawn in place: the cursor goes back up over the previous frame.
        child.expect("\x1b\\[1A")
        child.expect("models ready: echo")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before


def test_v1_peers_over_http(swarm: LocalSwarmFixture) -> None:
    url = f"{swarm.url()}/v1/peers"
    assert httpx.get(url, timeout=5).status_code == 401
    reply = httpx.get(url, headers={"Authorization": f"Bearer {swarm.token()}"}, timeout=5)
    assert reply.status_code == 200, reply.text
    data = reply.json()["data"]
    assert data[0]["peer_id"] == swarm.peer_id("gateway") and data[0]["role"] == "gateway"
    assert data[0]["healthy"]
    assert all(p["addrs"] == [] for p in data)  # where peers listen is for the operator
    admin = {"Authorization": f"Bearer {swarm.token('root', 600, 'admin')}"}
    seen = httpx.get(url, headers=admin, timeout=5).json()["data"]
    assert all(p["addrs"] for p in seen)
    nodes = {p["peer_id"]: p for p in data if p["role"] == "node"}
    assert set(nodes) == node_ids(swarm)
    for node in nodes.values():
        assert node["healthy"] and node["rtt_ms"] is not None and node["last_seen"] < 5
        assert set(node["load"]) == {"inflight", "queued", "capacity", "tokens_per_s", "draining"}
        assert set(node["hardware"]) == {
            "backend", "device_name", "memory", "memory_total", "memory_free",
        }  # fmt: skip
        assert set(node["models"][0]) == {"id", "task", "dtype", "state"}
