"""Jobs on a real gateway with echo nodes: submitted, followed, listed and cancelled over
HTTP and with ``bitinglip jobs``; finished after the gateway is killed and started again,
charged once; moved to another node when theirs dies; announced to a webhook, signed; and
an image job on a tiny Stable Diffusion, answered as the images route answers."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from gateway.accounts.database import Store
from gateway.accounts.webhooks import SIGNATURE_HEADER, verify
from node.cli.main import main
from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_images_swarm import wait_for_model
from tests.integration.test_swarm import wait_nodes
from tests.tiny_models import build_tiny_sd
from tests.unit.gateway.accounts.test_accounts import bearer


def chat(words: int, **extra: Any) -> dict[str, Any]:
    """A chat job's body: the echo model answers the ``words`` words back."""
    content = " ".join(f"w{i}" for i in range(words))
    return {
        "kind": "chat",
        "request": {"model": "echo", "messages": [{"role": "user", "content": content}]},
    } | extra


def wait_state(url: str, token: str, job: str, states: set[str], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    shown: dict[str, Any] = {}
    while time.monotonic() < deadline:
        shown = httpx.get(f"{url}/v1/jobs/{job}", headers=bearer(token), timeout=10).json()
        if shown["state"] in states:
            return shown
        time.sleep(0.1)
    raise AssertionError(f"job {job} is {shown.get('state')}, not {states}")


def submit(url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = httpx.post(f"{url}/v1/jobs", json=body, headers=bearer(token), timeout=10)
    assert reply.status_code == 202, reply.text
    found: dict[str, Any] = reply.json()
    return found


def test_jobs_over_http_and_the_cli(
    swarm: LocalSwarmFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    swarm.start_gateway()
    swarm.start_node("node-0", [swarm.addr("gateway")], ["echo"], ["--echo-delay", "0.05"])
    swarm.wait_ready(["node-0"])
    url = swarm.url()
    wait_nodes(url, 1)
    alice, bob = swarm.token("alice"), swarm.token("bob")

    job = submit(url, alice, chat(3, priority=2))
    assert job["state"] in ("queued", "running") and job["id"].startswith("job_")
    done = wait_state(url, alice, job["id"], {"done"})
    # The result is the synchronous route's answer.
    assert done["result"]["object"] == "chat.completion"
    assert done["result"]["choices"][0]["message"]["content"] == "w0 w1 w2"
    assert done["result"]["usage"]["completion_tokens"] == 3

    # Someone else's job does not exist for them, to read or to cancel.
    assert httpx.get(f"{url}/v1/jobs/{job['id']}", headers=bearer(bob)).status_code == 404
    assert httpx.delete(f"{url}/v1/jobs/{job['id']}", headers=bearer(bob)).status_code == 404
    assert httpx.get(f"{url}/v1/jobs", headers=bearer(bob)).json()["data"] == []
    assert httpx.delete(f"{url}/v1/jobs/{job['id']}", headers=bearer(alice)).status_code == 409

    # Bad input is refused at once, with the reason.
    too_high = httpx.post(f"{url}/v1/jobs", json=chat(1, priority=99), headers=bearer(alice))
    assert too_high.status_code == 400 and "at most 10" in too_high.text
    streamed = chat(1)
    streamed["request"]["stream"] = True
    assert httpx.post(f"{url}/v1/jobs", json=streamed, headers=bearer(alice)).status_code == 400
    no_messages = {"kind": "chat", "request": {"model": "echo"}}
    refused = httpx.post(f"{url}/v1/jobs", json=no_messages, headers=bearer(alice))
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "request.messages"
    hooked = httpx.post(
        f"{url}/v1/jobs", json=chat(1, webhook="http://example.com/"), headers=bearer(alice)
    )
    assert hooked.status_code == 400 and "no webhooks" in hooked.text

    # A long job is cancelled while it runs; the node stops making it.
    long = submit(url, alice, chat(400))
    wait_state(url, alice, long["id"], {"running"})
    cancelled = httpx.delete(f"{url}/v1/jobs/{long['id']}", headers=bearer(alice)).json()
    assert cancelled["state"] == "cancelled"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        peers = httpx.get(f"{url}/v1/models", headers=bearer(alice)).json()["data"][0]["peers"]
        if peers[0]["inflight"] == 0:
            break
        time.sleep(0.2)
    assert peers[0]["inflight"] == 0
    assert wait_state(url, alice, long["id"], {"cancelled"})["error"]["code"] == "cancelled"

    # Listed newest first, a page at a time.
    first = httpx.get(f"{url}/v1/jobs", params={"limit": 1}, headers=bearer(alice)).json()
    assert [j["id"] for j in first["data"]] == [long["id"]] and first["has_more"]
    rest = httpx.get(
        f"{url}/v1/jobs", params={"limit": 5, "before": first["next"]}, headers=bearer(alice)
    ).json()
    assert [j["id"] for j in rest["data"]] == [job["id"]] and not rest["has_more"]
    elsewhere = httpx.get(f"{url}/v1/jobs", params={"before": job["id"]}, headers=bearer(bob))
    assert elsewhere.status_code == 400 and elsewhere.json()["error"]["param"] == "before"

    # The same through the CLI.
    cli = ["--gateway", url, "--token", alice]
    assert main(["jobs", "submit", "--model", "echo", "--prompt", "a b", "--json", *cli]) == 0
    submitted = json.loads(capsys.readouterr().out)
    assert main(["jobs", "wait", submitted["id"], "--json", *cli]) == 0
    waited = json.loads(capsys.readouterr().out)
    assert waited["state"] == "done"
    assert waited["result"]["choices"][0]["message"]["content"] == "a b"
    assert main(["jobs", "status", submitted["id"], *cli]) == 0
    assert "done" in capsys.readouterr().out
    assert main(["jobs", "list", *cli]) == 0
    listed = capsys.readouterr().out
    assert submitted["id"] in listed and long["id"] in listed
    assert main(["jobs", "cancel", submitted["id"], *cli]) == 1  # it ended already
    assert "already ended" in capsys.readouterr().err
    assert main(["jobs", "status", "job_nope", *cli]) == 1

    exported = httpx.get(f"{url}/metrics").text
    assert 'bitinglip_gateway_jobs_ended_total{state="done"} 2.0' in exported
    assert 'bitinglip_gateway_jobs_ended_total{state="cancelled"} 1.0' in exported


def test_a_restarted_gateway_finishes_its_jobs_charged_once(
    swarm: LocalSwarmFixture, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[gateway]\njobs_running = 1\n")
    swarm.start_gateway(config=config)
    swarm.start_node("node-0", [swarm.addr("gateway")], ["echo"], ["--echo-delay", "0.02"])
    swarm.wait_ready(["node-0"])
    url = swarm.url()
    wait_nodes(url, 1)
    token = swarm.token("carol")
    # One at a time: the first runs (for seconds), the others wait behind it.
    jobs = [submit(url, token, chat(words))["id"] for words in (150, 4, 5)]
    wait_state(url, token, jobs[0], {"running"})
    queued = httpx.get(f"{url}/v1/jobs/{jobs[2]}", headers=bearer(token)).json()
    assert queued["state"] == "queued" and queued["position"] == 1
    assert queued["eta_seconds"] > 0
    swarm.kill("gateway")

    swarm.start_gateway(config=config, bootstrap=[swarm.addr("node-0")])
    url = swarm.url()
    wait_nodes(url, 1)
    for job, words in zip(jobs, (150, 4, 5), strict=True):
        shown = wait_state(url, token, job, {"done", "failed"})
        assert shown["state"] == "done", shown
        assert shown["result"]["usage"]["completion_tokens"] == words
    assert httpx.get(f"{url}/v1/jobs/{jobs[0]}", headers=bearer(token)).json()["attempts"] == 2
    with Store.open(swarm.data_dir / "peers" / "gateway") as store:
        rows = store.usage_records("carol")
    answered = sorted(r.completion_tokens for r in rows if r.status == 200)
    assert answered == [4, 5, 150]
    assert sum(r.prompt_tokens + r.completion_tokens for r in rows if r.status != 200) == 0


def test_a_job_whose_node_dies_finishes_on_another(swarm: LocalSwarmFixture) -> None:
    swarm.start_gateway()
    for name in ("node-a", "node-b"):
        swarm.start_node(name, [swarm.addr("gateway")], ["echo"], ["--echo-delay", "0.02"])
    swarm.wait_ready(["node-a", "node-b"])
    url = swarm.url()
    wait_nodes(url, 2)
    token = swarm.token("dave")
    job = submit(url, token, chat(200))["id"]
    wait_state(url, token, job, {"running"})
    busy = ""
    deadline = time.monotonic() + 10
    while not busy and time.monotonic() < deadline:
        peers = httpx.get(f"{url}/v1/models", headers=bearer(token)).json()["data"][0]["peers"]
        busy = next((p["peer_id"] for p in peers if p["inflight"]), "")
        time.sleep(0.05)
    name = "node-a" if busy == swarm.peer_id("node-a") else "node-b"
    swarm.kill(name)
    done = wait_state(url, token, job, {"done", "failed"})
    assert done["state"] == "done", done
    assert done["result"]["usage"]["completion_tokens"] == 200


class _Hooks(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[bytes, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((body, self.headers[SIGNATURE_HEADER]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def hook_server() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Hooks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def test_a_finished_job_calls_its_webhook_signed(swarm: LocalSwarmFixture) -> None:
    # The receiver is on this machine: the operator lets webhooks reach private hosts.
    env = {"BITINGLIP_GATEWAY_WEBHOOKS": "true", "BITINGLIP_GATEWAY_WEBHOOK_PRIVATE_HOSTS": "1"}
    swarm.start_gateway(env=env)
    swarm.start_node("node-0", [swarm.addr("gateway")], ["echo"])
    swarm.wait_ready(["node-0"])
    url = swarm.url()
    wait_nodes(url, 1)
    token = swarm.token("erin")
    secret = httpx.get(f"{url}/v1/auth/webhook-secret", headers=bearer(token)).json()["secret"]
    _Hooks.received.clear()
    with hook_server() as hook:
        job = submit(url, token, chat(2, webhook=hook))["id"]
        deadline = time.monotonic() + 30
        while not _Hooks.received and time.monotonic() < deadline:
            time.sleep(0.05)
    body, signature = _Hooks.received[0]
    verify(secret, body, signature, time.time())
    delivered = json.loads(body)
    assert delivered["id"] == job and delivered["state"] == "done"
    assert delivered["result"]["choices"][0]["message"]["content"] == "w0 w1"


def test_an_image_job_answers_as_the_images_route_does(
    swarm: LocalSwarmFixture, tmp_path: Path
) -> None:
    model = str(build_tiny_sd(tmp_path / "tiny-sd"))
    swarm.start_gateway()
    swarm.start_node("node-0", [swarm.addr("gateway")], [model])
    swarm.wait_ready(["node-0"])
    url, token = swarm.url(), swarm.token()
    wait_for_model(url, token, model)
    body = {"model": model, "prompt": "a red cat", "size": "64x64", "steps": 2, "seed": 3}
    inline = body | {"response_format": "b64_json"}
    direct = httpx.post(
        f"{url}/v1/images/generations", json=inline, headers=bearer(token), timeout=60
    )
    assert direct.status_code == 200, direct.text

    as_job = submit(url, token, {"kind": "image", "request": inline})
    done = wait_state(url, token, as_job["id"], {"done", "failed"})
    assert done["state"] == "done", done
    assert done["result"]["data"] == direct.json()["data"]  # the same seed, the same picture
    assert done["result"]["seed"] == 3

    linked = submit(url, token, {"kind": "image", "request": body})
    done = wait_state(url, token, linked["id"], {"done", "failed"})
    picture = done["result"]["data"][0]["url"]
    assert picture.startswith(f"{url}/v1/images/")
    fetched = httpx.get(picture, timeout=10)
    assert fetched.status_code == 200
    assert fetched.content == base64.b64decode(direct.json()["data"][0]["b64_json"])
