"""Metrics scraped from a real gateway and node process, and the Grafana dashboard's series."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_swarm import wait_nodes
from tests.unit.gateway.api.test_metrics import parse, value

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"

# --- real processes -----------------------------------------------------------------------


def test_gateway_and_node_metrics_from_real_processes(swarm: LocalSwarmFixture) -> None:
    gateway = swarm.start_gateway()
    boot = [str(gateway["addrs"][0])]  # type: ignore[index]
    swarm.start_node("node-0", boot, ["echo"], ["--metrics-port", "0"])
    swarm.wait_ready(["node-0"])
    url, token = swarm.url(), swarm.token()
    wait_nodes(url, 1)
    auth = {"Authorization": f"Bearer {token}"}
    for text in ("one two three", "four five"):
        body = {"model": "echo", "messages": [{"role": "user", "content": text}]}
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, headers=auth, timeout=30)
        assert reply.status_code == 200, reply.text

    scraped = httpx.get(f"{url}/metrics", timeout=10)
    assert scraped.status_code == 200
    gw = parse(scraped.text)
    node_id = swarm.peer_id("node-0")
    chat_200 = {"route": "/v1/chat/completions", "method": "POST", "status": "200"}
    assert value(gw, "bitinglip_gateway_http_request_duration_seconds_count", **chat_200) == 2
    assert value(gw, "bitinglip_gateway_completion_tokens_total", model="echo") == 5
    assert value(gw, "bitinglip_gateway_peers", state="healthy") == 1
    assert value(gw, "bitinglip_gateway_peer_capacity", peer=node_id) >= 1
    assert value(gw, "bitinglip_gateway_routing_retries_total") == 0
    assert value(gw, "process_resident_memory_bytes") > 0

    metrics_url = str(swarm.local.status("node-0")["metrics_url"])
    node = parse(httpx.get(metrics_url, timeout=10).text)
    assert value(node, "bitinglip_node_requests_total", method="generate", status="ok") == 2
    assert value(node, "bitinglip_node_completion_tokens_total", model="echo") == 5
    assert value(node, "bitinglip_node_generation_duration_seconds_count", model="echo") == 2
    assert value(node, "bitinglip_node_capacity") >= 1
    assert value(node, "bitinglip_node_inflight") == 0
    assert value(node, "bitinglip_node_tokens_per_second") > 0
    # A CPU host's memory is RAM, labelled so, never VRAM.
    assert value(node, "bitinglip_node_memory_total_bytes", kind="RAM") > 0
    assert value(gw, "bitinglip_gateway_peer_memory_total_bytes", peer=node_id, kind="RAM") > 0
    (info,) = [dict(labels) for name, labels in node if name == "bitinglip_node_info"]
    assert info["peer_id"] == node_id
    assert info["backend"] == "cpu"

    # Every series the Grafana dashboard draws is exported under that name, even those
    # with no samples yet (no 429 happened here): their HELP and TYPE lines are there.
    exported = _exported(scraped.text) | _exported(httpx.get(metrics_url, timeout=10).text)
    wanted = _dashboard_metrics()
    missing = {m for m in wanted if re.sub(SUFFIX, "", m) not in exported and m not in exported}
    assert wanted
    assert not missing


def test_gateway_metrics_on_a_listener_of_their_own(swarm: LocalSwarmFixture) -> None:
    swarm.local.spawn("gateway", "gateway", ["--port", "0", "--metrics-port", "0"])
    swarm.local.wait(["gateway"], "ready", 60)
    metrics_url = str(swarm.local.status("gateway")["metrics_url"])
    assert metrics_url != f"{swarm.url()}/metrics"
    assert httpx.get(f"{swarm.url()}/metrics", timeout=10).status_code == 404
    scraped = httpx.get(metrics_url, timeout=10)
    assert scraped.status_code == 200
    assert value(parse(scraped.text), "bitinglip_gateway_peers", state="healthy") == 0


SUFFIX = r"_(total|bucket|count|sum|info)$"


def _exported(text: str) -> set[str]:
    return {
        name
        for family in text_string_to_metric_families(text)
        for name in (family.name, *(s.name for s in family.samples))
    }


def _dashboard_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return {m for e in exprs for m in re.findall(r"\bbitinglip_[a-z_]+", e)}
