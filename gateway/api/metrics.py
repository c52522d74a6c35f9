"""The gateway's Prometheus metrics and ``GET /metrics``.

Three sources feed one registry per app (never the process-global one, so many apps can
live in one process):

- every HTTP request, through a small ASGI middleware: latency by route, method and status,
  and 429 answers;
- every inference call, through a ``Meter``: latency by kind, model and status, tokens and
  images; the speech routes add the seconds of audio they made or heard;
- the swarm as the gateway sees it, read from the ``PeerTable`` at scrape time: peers by
  state, each peer's load, and the router's retries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from functools import partial

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

import keys
from gateway.accounts.metering import Outcome
from gateway.api.asgi import HttpMiddleware, StatusSeen
from gateway.routing.peer_table import PeerTable
from node.p2p.metrics import model_counters, peer_registry

# Inference calls stream for seconds to minutes; the defaults stop at 10 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Label values for what a client can make up (a path, a model name), so that nobody can
# grow the number of series without bound.
UNMATCHED = "unmatched"
OTHER = "other"


class GatewayMetrics:
    """Every series the gateway exports, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = peer_registry()
        timed = partial(Histogram, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.http_duration = timed(
            "bitinglip_gateway_http_request_duration_seconds",
            "HTTP requests by route, method and status, and how long until the last byte",
            ["route", "method", "status"],
        )
        self.rate_limited = Counter(
            "bitinglip_gateway_rate_limited",
            "Requests refused with 429 Too Many Requests, by route",
            ["route"],
            registry=self.registry,
        )
        self.inference_duration = timed(
            "bitinglip_gateway_inference_duration_seconds",
            "Inference calls by kind, model and status, and how long each took",
            ["kind", "model", "status"],
        )
        counters = model_counters("gateway", "answered calls", self.registry)
        self.prompt_tokens = counters.prompt_tokens
        self.completion_tokens = counters.completion_tokens
        self.images = counters.images
        self.audio_seconds = Counter(
            "bitinglip_gateway_audio_seconds",
            "Seconds of audio made (speech) or heard (transcription, translation), by kind "
            "and model",
            ["kind", "model"],
            registry=self.registry,
        )
        self.jobs_ended = Counter(
            "bitinglip_gateway_jobs_ended",
            "Jobs that ended on this gateway, by state: done, failed or cancelled",
            ["state"],
            registry=self.registry,
        )
        self.response_cache = Counter(
            "bitinglip_gateway_response_cache",
            "Cacheable text calls by how the response cache answered: hit, miss or bypass",
            ["result"],
            registry=self.registry,
        )

    def observe_swarm(self, table: PeerTable, retries: Callable[[], int]) -> None:
        """Export the peers in ``table`` and the ``retries`` count, read at each scrape."""
        self.registry.register(SwarmCollector(table, retries))

    def http_done(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else OTHER
        self.http_duration.labels(route, method, str(status)).observe(seconds)
        if status == 429:
            self.rate_limited.labels(route).inc()

    def call_done(self, outcome: Outcome, model: str) -> None:
        status = str(outcome.status)
        self.inference_duration.labels(outcome.kind, model, status).observe(outcome.latency)
        if outcome.prompt_tokens:
            self.prompt_tokens.labels(model).inc(outcome.prompt_tokens)
        if outcome.completion_tokens:
            self.completion_tokens.labels(model).inc(outcome.completion_tokens)
        if outcome.images:
            self.images.labels(model).inc(outcome.images)

    def audio_done(self, kind: str, model: str, seconds: float) -> None:
        """Count the audio of a call that was answered (so ``model`` is one the swarm has)."""
        self.audio_seconds.labels(kind, model).inc(max(0.0, seconds))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class InferenceMeter:
    """Counts every inference call; admits them all (limits are other meters' business)."""

    def __init__(self, metrics: GatewayMetrics, models: Callable[[], Collection[str]]) -> None:
        self._metrics = metrics
        self._models = models

    async def admit(self, claims: keys.Claims, outcome: Outcome) -> None:
        return None

    async def record(self, claims: keys.Claims, outcome: Outcome) -> None:
        known = outcome.status < 400 or outcome.model in self._models()
        self._metrics.call_done(outcome, outcome.model if known else OTHER)

    def headers(self, claims: keys.Claims) -> dict[str, str]:
        return {}


class SwarmCollector:
    """The peer table and the router's retries, as they are when Prometheus asks."""

    def __init__(self, table: PeerTable, retries: Callable[[], int]) -> None:
        self._table = table
        self._retries = retries

    def collect(self) -> Iterable[Metric]:
        now = time.time()
        yield CounterMetricFamily(
            "bitinglip_gateway_routing_retries",
            "Calls a node did not take (busy, draining, unreachable) and that went to another",
            value=self._retries(),
        )
        peers = GaugeMetricFamily(
            "bitinglip_gateway_peers", "Nodes this gateway knows, by state", labels=["state"]
        )
        per_peer = {
            name: GaugeMetricFamily(f"bitinglip_gateway_peer_{name}", doc, labels=["peer"])
            for name, doc in (
                ("inflight", "Calls running on the node"),
                ("queued", "Calls waiting on the node"),
                ("capacity", "Calls the node runs at once"),
                ("tokens_per_second", "The node's recent decode speed"),
            )
        }
        # Labelled with the memory's kind (VRAM, RAM, unified), so a sum of the GPUs' VRAM
        # leaves the CPU nodes' RAM out.
        memory = {
            name: GaugeMetricFamily(f"bitinglip_gateway_peer_{name}", doc, labels=["peer", "kind"])
            for name, doc in (
                ("memory_free_bytes", "Memory free for models on the node, by kind"),
                ("memory_total_bytes", "Memory for models on the node, by kind"),
            )
        }
        states = dict.fromkeys(("healthy", "suspect", "draining"), 0)
        for entry in list(self._table.entries.values()):
            load = entry.load
            if load.draining:
                states["draining"] += 1
            elif entry.suspect(now):
                states["suspect"] += 1
            else:
                states["healthy"] += 1
            values = {
                "inflight": load.inflight,
                "queued": load.queued,
                "capacity": load.capacity,
                "tokens_per_second": load.tokens_per_s,
            }
            for name, value in values.items():
                per_peer[name].add_metric([entry.peer_id], value)
            hardware = entry.record.hardware
            labels = [entry.peer_id, hardware.memory]
            memory["memory_free_bytes"].add_metric(labels, load.memory_free)
            memory["memory_total_bytes"].add_metric(labels, hardware.memory_total)
        for state, count in states.items():
            peers.add_metric([state], count)
        yield peers
        yield from per_peer.values()
        yield from memory.values()


class _Instrumented(HttpMiddleware):
    """Times every HTTP request until its last byte and notes its status."""

    def __init__(
        self, app: ASGIApp, metrics: GatewayMetrics, routes: Callable[[], list[BaseRoute]]
    ) -> None:
        super().__init__(app)
        self.metrics = metrics
        self.routes = routes

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        asked = dict(scope)  # routing rewrites the path and root path as it goes
        sending = StatusSeen(send)
        try:
            await self.app(scope, receive, sending)
        except BaseException as exc:
            sending.failed(exc)
            raise
        finally:
            method = str(scope.get("method", ""))
            route = self._route(scope.get("route"), asked)
            self.metrics.http_done(route, method, sending.status, time.monotonic() - started)

    def _route(self, route: BaseRoute | None, asked: Scope) -> str:
        """The matched route's template, never the path a client sent."""
        if route is None:
            # The router names the API's own routes in the scope; the API description,
            # the docs and static files leave no trace: match the request again.
            route = next((r for r in self.routes() if r.matches(asked)[0] != Match.NONE), None)
        return str(getattr(route, "path", UNMATCHED))


def install(app: FastAPI) -> None:
    services = app.state.services
    metrics: GatewayMetrics = services.metrics
    if not any(isinstance(m, InferenceMeter) for m in services.meters):
        # First, so that it is admitted and counts calls another meter refuses.
        services.meters.insert(0, InferenceMeter(metrics, lambda: services.backend.serving()))
    app.add_middleware(_Instrumented, metrics=metrics, routes=lambda: app.routes)
    if not app.state.metrics_route:
        return

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    )
    async def get_metrics(request: Request) -> Response:
        """Prometheus metrics of this gateway and of the swarm as it sees it."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def metrics_app(metrics: GatewayMetrics) -> ASGIApp:
    """``GET /metrics`` and nothing else, for a listener of its own: the operator can keep
    the metrics (peer ids, load, models) off the address users reach."""

    async def get_metrics(request: StarletteRequest) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/metrics", get_metrics, methods=["GET"])])
