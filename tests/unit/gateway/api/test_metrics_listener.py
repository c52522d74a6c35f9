"""Metrics on a listener of their own: the public app then has no ``/metrics``, and the
listener serves the same registry the public app's calls feed."""

from __future__ import annotations

from pathlib import Path

from gateway.api.app import create_app
from gateway.api.auth import Authenticator
from gateway.api.metrics import metrics_app
from gateway.api.services import Services
from gateway.config import GatewayConfig
from node.cli.main import build_parser
from node.p2p.config import load
from tests.unit.gateway.api.test_http import KEY, FakeBackend, auth, chat, http
from tests.unit.gateway.api.test_metrics import parse, value


def services() -> Services:
    return Services(backend=FakeBackend(), auth=Authenticator(KEY.public_key()))


async def test_by_default_the_public_port_serves_metrics() -> None:
    async with http(create_app(services())) as client:
        assert (await client.get("/metrics")).status_code == 200


async def test_metrics_apart_leave_the_public_port_and_count_its_calls() -> None:
    shared = services()
    async with http(create_app(shared, metrics_route=False)) as public:
        assert (await public.get("/metrics")).status_code == 404
        paths = (await public.get("/openapi.json")).json()["paths"]
        assert "/metrics" not in paths
        reply = await public.post("/v1/chat/completions", json=chat(), headers=auth())
        assert reply.status_code == 200
    async with http(metrics_app(shared.metrics)) as private:
        scraped = await private.get("/metrics")
        assert (await private.get("/v1/models")).status_code == 404
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    samples = parse(scraped.text)
    assert value(samples, "bitinglip_gateway_completion_tokens_total", model="echo") == 3


def test_metrics_port_and_host_from_the_config_and_the_flag(tmp_path: Path) -> None:
    assert GatewayConfig().metrics_port is None
    config = tmp_path / "gateway.toml"
    config.write_text('[gateway]\nmetrics_host = "10.0.0.2"\nmetrics_port = 9100\n')
    loaded = load(GatewayConfig, "gateway", {}, config)
    assert (loaded.metrics_host, loaded.metrics_port) == ("10.0.0.2", 9100)
    args = build_parser().parse_args(["gateway", "start", "--metrics-port", "0"])
    assert args.metrics_port == 0
