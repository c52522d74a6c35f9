"""Request ids end to end: a real gateway and node, both logging JSON, and the official
``openai`` client. One call's id is in the response header, in the gateway's log lines and
in the node's log lines for the call; an unsafe id is replaced; errors carry the id too."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_openai_e2e import wait_models

JSON_LOGS = ["--log-format", "json"]


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSwarmFixture]:
    s = LocalSwarmFixture(tmp_path_factory.mktemp("ids") / "swarm")
    try:
        # One peer takes the format from the environment, the other from the flag.
        s.start_gateway(env={"BITINGLIP_LOG_FORMAT": "json"})
        s.start_node("node", [s.addr("gateway")], ["echo"], JSON_LOGS)
        s.wait_ready(["node"])
        wait_models(s.url(), s.token(), {"echo"})
        yield s
    finally:
        s.local.stop()


def log_lines(swarm: LocalSwarmFixture, name: str) -> list[dict[str, Any]]:
    """Every line of a peer's log, each of which must be one JSON object."""
    text = (swarm.data_dir / "logs" / f"{name}.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line]


def lines_of(swarm: LocalSwarmFixture, name: str, request_id: str) -> list[dict[str, Any]]:
    """The lines of ``name``'s log for one call, waiting a moment for them to be written
    (the gateway logs a call once its response is sent)."""
    deadline = time.monotonic() + 10
    while True:
        found = [line for line in log_lines(swarm, name) if line.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_one_call_has_one_id_at_the_gateway_and_at_the_node(swarm: LocalSwarmFixture) -> None:
    client = openai.OpenAI(base_url=f"{swarm.url()}/v1", api_key=swarm.token(), max_retries=0)
    request_id = "trace-4f2a.9:b_1"
    raw = client.chat.completions.with_raw_response.create(
        model="echo",
        messages=[{"role": "user", "content": "hello there"}],
        extra_headers={"X-Request-Id": request_id},
    )
    assert raw.http_response.status_code == 200
    assert raw.headers["x-request-id"] == request_id
    assert raw.parse().choices[0].message.content == "hello there"

    gateway = lines_of(swarm, "gateway", request_id)
    assert any(line["message"].startswith("POST /v1/chat/completions 200") for line in gateway)
    node = lines_of(swarm, "node", request_id)
    assert any(line["message"].startswith("rpc generate from gateway") for line in node)
    for line, peer in [(gateway[0], swarm.peer_id("gateway")), (node[0], swarm.peer_id("node"))]:
        assert {"time", "level", "logger", "message", "peer", "request_id"} <= set(line)
        assert line["peer"] == peer and line["level"] == "info"
    # Every line either peer wrote is JSON (log_lines parsed them all), startup included.
    assert len(log_lines(swarm, "gateway")) > len(gateway)


@pytest.mark.parametrize("sent", ["has space", "x" * 65, 'quote"d', "semi;colon"])
def test_an_unsafe_id_is_replaced(swarm: LocalSwarmFixture, sent: str) -> None:
    reply = httpx.post(
        f"{swarm.url()}/v1/chat/completions",
        headers={"Authorization": f"Bearer {swarm.token()}", "X-Request-Id": sent},
        json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert reply.status_code == 200
    made = reply.headers["X-Request-Id"]
    assert made != sent and len(made) == 24
    assert lines_of(swarm, "node", made)
    assert not lines_of(swarm, "gateway", sent)


def test_errors_name_their_request(swarm: LocalSwarmFixture) -> None:
    client = openai.OpenAI(base_url=f"{swarm.url()}/v1", api_key=swarm.token(), max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model="no-such-model",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Request-Id": "missing-model-1"},
        )
    assert caught.value.request_id == "missing-model-1"
    body = caught.value.body
    assert isinstance(body, dict) and body["request_id"] == "missing-model-1"
    unauthorized = httpx.get(f"{swarm.url()}/v1/models", timeout=10)
    assert unauthorized.status_code == 401
    made = unauthorized.headers["X-Request-Id"]
    assert unauthorized.json()["error"]["request_id"] == made
    line = lines_of(swarm, "gateway", made)
    assert line and line[-1]["message"].startswith("GET /v1/models 401")
