"""A node's Prometheus metrics, and the small HTTP server that exposes them.

Calls are counted by wrapping the RPC handler table (``instrument``); load, memory and
speed are read from the node at scrape time, so they are never stale. The server is
hypercorn on the node's own trio loop, as the gateway's is: a scrape reads the
scheduler on the thread that changes it, and ``nursery.start(serve)`` returns the bound
address, so port 0 works in tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from functools import partial
from typing import Any, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.typing import ASGIFramework
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from starlette.types import Receive, Scope, Send

from node.p2p.metrics import model_counters, peer_registry
from node.p2p.rpc_server import Caller, Emit, Handler, RpcError
from node.p2p.streams import StreamBroken
from protocols import Hardware, Load

logger = logging.getLogger(__name__)

# What ends a call whose caller went away.
_CALLER_LEFT = (trio.Cancelled, StreamBroken)
GENERATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# The methods that run a model; each is counted and timed.
GENERATING = frozenset({"generate", "generate_image", "speak", "transcribe", "describe"})
STREAMING_TEXT = frozenset({"generate", "describe"})  # timed to their first text
OTHER = "other"  # the model label of a call for a model this node does not serve


def _caller_left(exc: BaseException) -> bool:
    """Whether ``exc`` says only that the caller left: a cancellation (from inside a nursery,
    a group of them) or the stream broken while the answer was being sent."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(_CALLER_LEFT)[1] is None
    return isinstance(exc, _CALLER_LEFT)


class NodeMetrics:
    """Every series a node exports, in a registry of its own."""

    def __init__(
        self,
        load: Callable[[], Load],
        hardware: Callable[[], Hardware],
        served: Callable[[], Collection[str]],
        info: Mapping[str, str],
    ) -> None:
        self._served = served
        self.registry = peer_registry()
        self.registry.register(_LoadCollector(load, hardware, info))
        self.requests = Counter(
            "bitinglip_node_requests",
            "RPC calls by method and outcome (ok, or the error code)",
            ["method", "status"],
            registry=self.registry,
        )
        by_model = partial(
            Histogram, labelnames=["model"], buckets=GENERATION_BUCKETS, registry=self.registry
        )
        self.generation_seconds = by_model(
            "bitinglip_node_generation_duration_seconds",
            "Generations (text or images) that finished, by model: from arrival to the end",
        )
        self.first_token_seconds = by_model(
            "bitinglip_node_time_to_first_token_seconds",
            "From a generate call arriving (queueing included) to its first text, by model",
        )
        counters = model_counters("node", "finished generations", self.registry)
        self.prompt_tokens = counters.prompt_tokens
        self.completion_tokens = counters.completion_tokens
        self.images = counters.images
        self.audio_seconds = Counter(
            "bitinglip_node_audio_seconds",
            "Seconds of speech made (speak) or heard (transcribe), by model",
            ["model"],
            registry=self.registry,
        )

    def instrument(self, handlers: Mapping[str, Handler]) -> dict[str, Handler]:
        """The same handler table, each handler counted; generations also timed."""
        return {
            method: partial(self._generate if method in GENERATING else self._call, method, h)
            for method, h in handlers.items()
        }

    async def _call(
        self, method: str, handler: Handler, params: dict[str, Any], caller: Caller, emit: Emit
    ) -> dict[str, Any]:
        status = "internal"
        try:
            result = await handler(params, caller, emit)
            status = "ok"
            return result
        except RpcError as exc:
            status = exc.code.value.lower()
            raise
        except BaseException as exc:
            if _caller_left(exc):
                status = "cancelled"
            raise
        finally:
            self.requests.labels(method, status).inc()

    async def _generate(
        self, method: str, handler: Handler, params: dict[str, Any], caller: Caller, emit: Emit
    ) -> dict[str, Any]:
        model = str(params.get("model", ""))
        model = model if model in self._served() else OTHER
        arrived = time.monotonic()
        first: list[float] = []

        async def timed_emit(data: dict[str, Any]) -> None:
            if not first and method in STREAMING_TEXT:
                first.append(time.monotonic())
                self.first_token_seconds.labels(model).observe(first[0] - arrived)
            await emit(data)

        result = await self._call(method, handler, params, caller, timed_emit)
        self.generation_seconds.labels(model).observe(time.monotonic() - arrived)
        for counter, field in (
            (self.prompt_tokens, "prompt_tokens"),
            (self.completion_tokens, "completion_tokens"),
            (self.images, "images"),
            (self.audio_seconds, "audio_seconds"),
        ):
            if result.get(field):
                counter.labels(model).inc(float(result[field]))
        return result

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve ``GET /metrics`` on ``host:port`` until cancelled; start with its URL."""
        config = HypercornConfig()
        config.bind = [f"{host}:{port}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        app = cast(ASGIFramework, partial(_metrics_app, self.registry))
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(hypercorn_serve, app, config))
            task_status.started(f"{binds[0]}/metrics")


class _LoadCollector:
    """Load, memory and speed as they are when Prometheus asks."""

    def __init__(
        self, load: Callable[[], Load], hardware: Callable[[], Hardware], info: Mapping[str, str]
    ) -> None:
        self._load = load
        self._hardware = hardware
        self._info = dict(info)

    def collect(self) -> Iterable[Metric]:
        load, hardware = self._load(), self._hardware()
        yield InfoMetricFamily("bitinglip_node", "Who this node is", value=self._info)
        for name, doc, value in (
            ("inflight", "Calls running now", load.inflight),
            ("queued", "Calls waiting for a slot", load.queued),
            ("capacity", "Calls run at once", load.capacity),
            ("draining", "1 while the node finishes its calls before stopping", load.draining),
            ("tokens_per_second", "Recent decode speed (a moving average)", load.tokens_per_s),
        ):
            yield GaugeMetricFamily(f"bitinglip_node_{name}", doc, value=float(value))
        # Labelled with the memory's kind (VRAM, RAM, unified): a CPU host's RAM is not VRAM.
        for name, doc, value in (
            ("memory_free_bytes", "Memory free for models, by kind", hardware.memory_free),
            ("memory_total_bytes", "Memory for models in all, by kind", hardware.memory_total),
        ):
            memory = GaugeMetricFamily(f"bitinglip_node_{name}", doc, labels=["kind"])
            memory.add_metric([hardware.memory], float(value))
            yield memory


async def _metrics_app(
    registry: CollectorRegistry, scope: Scope, receive: Receive, send: Send
) -> None:
    """A tiny ASGI app: ``GET /metrics`` and nothing else."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        await send({"type": "websocket.close"})
        return
    found = scope["path"] == "/metrics"
    body = generate_latest(registry) if found else b"not found: try /metrics\n"
    content_type = CONTENT_TYPE_LATEST if found else "text/plain; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": 200 if found else 404,
            "headers": [(b"content-type", content_type.encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
