"""``bitinglip up``: a whole local swarm from one command, stopped cleanly by a signal."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]
import pytest

import keys


@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM])
def test_up_serves_then_stops_everything(tmp_path: Path, stop_with: signal.Signals) -> None:
    command = [sys.executable, "-m", "node.cli", "up", "--model", "echo", "--port", "0"]
    command += ["--nodes", "2", "--data-dir", str(tmp_path), "--json", "--log-format", "json"]
    up = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert up.stdout is not None
        ready = json.loads(up.stdout.readline())
        assert ready["nodes"] == 2 and ready["model"] == "echo"
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) == 3  # one gateway, two nodes

        reply = httpx.post(
            f"{ready['url']}/v1/chat/completions",
            headers={"Authorization": f"Bearer {ready['token']}"},
            json={"model": "echo", "messages": [{"role": "user", "content": "hi there"}]},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == "hi there"

        up.send_signal(stop_with)
        assert up.wait(30) == 0
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"still running: {alive}"
        # Its own lines and its peers' are JSON, one object a line.
        assert up.stderr is not None
        said = [json.loads(line) for line in up.stderr.read().splitlines()]
        assert said[-1]["message"] == "swarm stopped" and said[-1]["logger"] == "node.cli.up"
        for peer in ["gateway", "node-0", "node-1"]:
            logged = (tmp_path / "logs" / f"{peer}.log").read_text().splitlines()
            assert logged and all(json.loads(line)["peer"] for line in logged)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def _status(path: Path) -> dict[str, object]:
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(what)


def test_up_starts_a_dead_peer_again_and_keeps_serving(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "node.cli", "up", "--model", "echo", "--port", "0"]
    command += ["--nodes", "2", "--data-dir", str(tmp_path), "--json"]
    up = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "run"
    try:
        assert up.stdout is not None
        ready = json.loads(up.stdout.readline())
        url, headers = ready["url"], {"Authorization": f"Bearer {ready['token']}"}

        def answers() -> bool:
            body = {"model": "echo", "messages": [{"role": "user", "content": "still here"}]}
            try:
                reply = httpx.post(
                    f"{url}/v1/chat/completions", headers=headers, json=body, timeout=10
                )
            except httpx.HTTPError:
                return False
            return reply.status_code == 200

        node = _status(run / "node-0.json")
        psutil.Process(int(str(node["pid"]))).kill()
        assert answers()  # node-1 serves meanwhile: the swarm did not stop
        _until(
            lambda: (
                _status(run / "node-0.json").get("pid") not in (None, node["pid"])
                and _status(run / "node-0.json").get("state") == "ready"
            ),
            30,
            "node-0 was not started again",
        )
        assert _status(run / "node-0.json")["peer_id"] == node["peer_id"]  # same identity

        gateway = _status(run / "gateway.json")
        psutil.Process(int(str(gateway["pid"]))).kill()
        _until(
            lambda: (
                _status(run / "gateway.json").get("pid") not in (None, gateway["pid"]) and answers()
            ),
            60,
            "the gateway was not started again on its URL, routing to the nodes",
        )
        assert up.poll() is None
        children = psutil.Process(up.pid).children(recursive=True)
        up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"still running: {alive}"
        assert up.stderr is not None
        log = up.stderr.read()
        assert "node-0 exited with code -9; starting it in 1 s" in log
        assert "gateway exited with code -9; starting it in 1 s" in log
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def test_a_node_stopped_while_it_loads_exits_at_once(tmp_path: Path) -> None:
    """SIGTERM while the model is still loading (here: a Hub that never answers) ends the
    node at once; it used to be held until the load gave up."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    keys.init_operator(tmp_path)
    status = tmp_path / "node.json"
    env = os.environ | {
        "HF_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}",
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_CACHE": str(tmp_path / "cache"),
    }
    command = [sys.executable, "-m", "node", "start", "--model", "someone/slow-model"]
    command += ["--data-dir", str(tmp_path), "--listen", "/ip4/127.0.0.1/tcp/0"]
    command += ["--ready-file", str(status)]
    node = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        _until(lambda: _status(status).get("state") == "loading", 60, "the node never loaded")
        time.sleep(0.5)  # into the download
        node.send_signal(signal.SIGTERM)
        assert node.wait(8) == 0
        assert _status(status)["state"] == "stopped"
    finally:
        silent.close()
        if node.poll() is None:
            node.kill()
            node.wait()


def test_up_passes_its_config_to_every_peer_and_shares_one_model_store(tmp_path: Path) -> None:
    config = tmp_path / "swarm.toml"
    config.write_text(
        '[gateway]\nregistration = "closed"\n[gateway.plans.default]\nrequests_per_minute = 2\n'
        "[node]\nmax_queue = 3\n"
    )
    store = tmp_path / "store"
    command = [sys.executable, "-m", "node.cli", "up", "--model", "echo", "--port", "0"]
    command += ["--nodes", "1", "--data-dir", str(tmp_path / "data"), "--json"]
    command += ["--config", str(config)]
    env = os.environ | {"BITINGLIP_MODEL_STORE": str(store)}
    up = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        assert up.stdout is not None
        ready = json.loads(up.stdout.readline())
        url, headers = ready["url"], {"Authorization": f"Bearer {ready['token']}"}
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        codes = [
            httpx.post(f"{url}/v1/chat/completions", headers=headers, json=body).status_code
            for _ in range(3)
        ]
        assert codes == [200, 200, 429]  # the config's plan
        register = {"username": "someone", "password": "a long password indeed"}
        assert httpx.post(f"{url}/v1/auth/register", json=register).status_code == 403
        node = next(
            p for p in psutil.Process(up.pid).children(recursive=True) if "node" in p.cmdline()
        )
        line = node.cmdline()
        assert line[line.index("--model-store") + 1] == str(store.resolve())
        assert line[line.index("--config") + 1] == str(config.resolve())
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(30)
