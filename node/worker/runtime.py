"""A node process: join the swarm, load models, advertise, serve, drain on shutdown.

Models load at start (from the config), at runtime (an operator's ``load_model``) and where
the swarm wants them (``[node.placement]``, node.worker.placement), all through ``_load``;
``unload_model`` drains one model and frees its memory.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import trio

import keys
from keys.files import raw_public
from node.p2p import logs
from node.p2p.admission import serve_rpc
from node.p2p.advertise import Advertiser
from node.p2p.gateways import keep_reaching
from node.p2p.host import PeerHost
from node.p2p.lan import discover_on_lan, on_lan
from node.p2p.readiness import StatusFile
from node.p2p.relay import settings_of
from node.p2p.relays import keep_reserved
from node.p2p.tasks import supervised
from node.p2p.version import VERSION
from node.worker import memory
from node.worker.config import NodeConfig
from node.worker.handlers import NodeService, Report
from node.worker.loading import is_echo, load_runner, task_of
from node.worker.metrics import NodeMetrics
from node.worker.placement import Board, Here, Placement, Policy
from node.worker.roster import Busy, Held, Roster
from node.worker.runners import EngineRunner, EngineSpec, ModelRunner, Progress
from protocols import Demand, Hardware, NodeRecord
from protocols.operator import ModelSpec, Unload

logger = logging.getLogger(__name__)

DRAIN_TIMEOUT = 30.0
PLACE_EVERY = 0.5  # seconds between placement decisions
STORE_EVERY = 10.0  # seconds between looks at which allowed models the store holds


def _probe() -> Hardware:
    from node.worker.hardware import probe

    return probe()


def _refresh(hardware: Hardware, exact: bool = False) -> Hardware:
    from node.worker.hardware import refresh_free

    return refresh_free(hardware, exact)


def _default_store() -> Path:
    from node.worker.models import default_model_store

    return default_model_store()


def _stored(models: list[str], store: Path) -> dict[str, int | None]:
    """Which of ``models`` this node has on disk, each with its weights' bytes (None when
    unknown); echo models need nothing."""
    from node.worker.model_store import list_models, model_footprint

    held = {m.id: m for m in list_models(store)}
    found: dict[str, int | None] = {}
    for model in models:
        local = Path(model).expanduser()
        if is_echo(model):
            found[model] = 0
        elif model in held:
            footprint = held[model].footprint
            found[model] = None if footprint is None else footprint.bytes
        elif local.is_dir():
            footprint = model_footprint(local)
            found[model] = None if footprint is None else footprint.bytes
    return found


def _memory_name(hardware: Hardware) -> str:
    from node.worker.model_store import memory_name

    return memory_name(hardware)


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        # Checked first, so a mistake in the config stops the node before anything else.
        self.specs = config.model_specs()
        self.engines = [EngineSpec.from_config(table) for table in config.engines]
        self.status = StatusFile(config.ready_file)
        self.identity = keys.identity(config.data_dir)
        self.host = PeerHost.of(config.data_dir, "node", settings_of(config, config.reachability))
        logs.set_peer(self.host.peer_id)
        self.roster = Roster(config.max_queue, config.capacity)
        self.hardware = Hardware("cpu", "unknown", "RAM", 0, 0)
        # Memory promised to models still loading, not yet visible as used.
        self._promised = 0
        self._promising = threading.Lock()
        ttl = config.record_ttl
        spread = (ttl / 8, ttl / 2)  # after the joins of a swarm started together
        self.advertiser = Advertiser(self.host, self.identity, self._record, ttl, spread)
        self.policy = Policy.from_table(config.placement)
        self.placement = Placement(self.policy)
        self.board = Board()
        self._stored: dict[str, int | None] = {}  # allowed models on disk: weights' bytes
        self.service = NodeService(
            self.roster,
            lambda: self.hardware.memory_free,
            lambda: (self.advertiser.seq, self.advertiser.signed),
            control=self,
            on_demand=self._heard_demand,
        )

    def _record(self, seq: int, now: float) -> NodeRecord:
        return NodeRecord(
            peer_id=self.host.peer_id,
            public_key=raw_public(self.identity),
            role="node",
            version=VERSION,
            addrs=self.host.addrs(),
            hardware=self.hardware,
            models=[held.info for held in self.roster],
            load=self.service.load(),
            seq=seq,
            issued_at=now,
            ttl=self.config.record_ttl,
            can_load=self._can_load(),
        )

    def _can_load(self) -> list[str]:
        """The models this node would load if they were wanted (gateways queue their calls);
        one being unloaded counts: a call that comes meanwhile waits for it to come back."""
        if not self.policy.enabled:
            return []
        here = {h.spec.id for h in self.roster if h.state in ("loading", "ready")}
        return [
            m
            for m in self.policy.allowed
            if m not in here and (m in self._stored or self.policy.pull)
        ]

    # Loading and unloading.

    async def load_model(self, spec: ModelSpec, report: Report) -> dict[str, Any]:
        """An operator's ``load_model``: load ``spec`` while reporting progress."""
        started = time.monotonic()
        held = await self._load(spec, self._make(spec), report)
        return {"model": asdict(held.info), "seconds": round(time.monotonic() - started, 2)}

    async def unload_model(self, request: Unload) -> dict[str, Any]:
        """Stop routing to the model, let its calls finish (cancel them past the timeout),
        then free its memory."""
        model = request.model
        held = self.roster.get(model)
        if held is not None and held.state == "loading":
            raise Busy(f"{model} is still loading: unload it once it is ready")
        held = self.roster.drain_model(model)
        self.advertiser.republish_soon()
        scheduler = held.scheduler
        calls = 0 if scheduler is None else scheduler.inflight + scheduler.queued
        logger.info("%s: draining %d calls", model, calls)
        left = 0
        if scheduler is not None:
            with trio.move_on_after(request.timeout):
                await scheduler.wait_idle()
            left = scheduler.inflight + scheduler.queued
            if left:
                logger.info("%s: cancelling %d calls still running", model, left)
                scheduler.stop()
                await scheduler.wait_idle()
        runner = held.runner
        if runner is not None:
            # Ends any call still running as cancelled, and drops the weights.
            await trio.to_thread.run_sync(runner.close)
        self.roster.remove(model)
        before = self.hardware.memory_free
        await self._refresh_now()
        self.advertiser.republish_soon()
        self._status_models()
        logger.info("%s: unloaded", model)
        return {
            "model": model,
            "calls_drained": calls - left,
            "calls_cancelled": left,
            "freed_bytes": max(0, self.hardware.memory_free - before),
        }

    def _make(self, spec: ModelSpec) -> Callable[[Progress], ModelRunner]:
        store = self.config.model_store or _default_store()

        def make(progress: Progress) -> ModelRunner:
            promised = [0]

            def admit(needs: memory.Estimate | None) -> None:
                promised[0] = self._promise(spec.id, needs)

            try:
                return load_runner(
                    spec,
                    store,
                    self.hardware.backend,
                    progress,
                    admit,
                    self.config.echo_delay,
                    lambda: _refresh(self.hardware, exact=True).memory_free,
                )
            finally:
                with self._promising:
                    self._promised -= promised[0]

        return make

    def _promise(self, model: str, needs: memory.Estimate | None) -> int:
        """Admit a model whose needs are ``needs`` (in a worker thread): refuse it if it
        would not fit the memory free now, less what loading models were promised."""
        if needs is None:
            logger.warning("%s: no safetensors weights, so its memory needs are unknown", model)
            return 0
        free = _refresh(self.hardware, exact=True).memory_free
        with self._promising:
            memory.admit(model, needs, max(0, free - self._promised), _memory_name(self.hardware))
            self._promised += needs.total
        logger.info("%s: needs %s", model, needs.describe())
        return needs.total

    async def _load(
        self,
        spec: ModelSpec,
        make: Callable[[Progress], ModelRunner],
        report: Report | None = None,
        abandon: bool = False,
    ) -> Held:
        """Make ``spec``'s runner in a worker thread, reporting progress, and serve it.
        A failure leaves the model ``failed`` (advertised, with its reason) and is raised."""
        model = spec.id
        self.roster.begin(spec, task_of(model))
        self.advertiser.republish_soon()
        send, receive = trio.open_memory_channel[tuple[str, float | None]](math.inf)

        def progress(message: str, fraction: float | None) -> None:
            shown = f" {fraction:.0%}" if fraction is not None else ""
            logger.info("%s: %s%s", model, message, shown)

            def show() -> None:
                self.status.update(message=f"{model}: {message}", progress=fraction)
                send.send_nowait((message, fraction))

            trio.from_thread.run_sync(show)

        async def forward() -> None:
            nonlocal report
            async for message, fraction in receive:
                if report is not None:
                    try:
                        await report(message, fraction)
                    except Exception:  # the caller went away: the model loads all the same
                        report = None

        runner: ModelRunner | None = None
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward)
            try:
                runner = await trio.to_thread.run_sync(make, progress, abandon_on_cancel=abandon)
            except Exception as exc:  # raised below: inside the nursery it would be grouped
                failure = exc
            finally:
                send.close()
        if runner is None:
            reason = str(failure or "the loader returned nothing")
            logger.error("cannot load %s: %s", model, reason)
            self.roster.failed(model, reason)
            self.advertiser.republish_soon()
            raise failure or RuntimeError(reason)
        held = self.roster.ready(model, runner)
        logger.info("%s: ready (%s)", model, runner.info.dtype)
        await self._refresh_now()
        self._status_models()
        self.advertiser.republish_soon()
        return held

    async def _load_at_start(
        self, spec: ModelSpec, make: Callable[[Progress], ModelRunner]
    ) -> None:
        try:
            # Abandoned if the node is stopped while it loads: the process is exiting.
            await self._load(spec, make, abandon=True)
        except Exception as exc:  # advertised as failed; the node serves the others
            self.status.update(state="failed", message=f"{spec.id}: {exc}")

    # Placement: models where the swarm wants them.

    def _heard_demand(self, gateway: str, demand: Demand) -> None:
        self.board.report(gateway, demand, time.monotonic())

    async def _look_at_store(self) -> None:
        """Which allowed models are on disk now (they go in the record's ``can_load``)."""
        store = self.config.model_store or _default_store()
        stored = await trio.to_thread.run_sync(_stored, self.policy.allowed, store)
        if stored != self._stored:
            self._stored = stored
            self.advertiser.republish_soon()

    async def _place(self) -> None:
        """Load what is wanted and fits, unload what sits idle, by ``self.policy``."""
        looked = time.monotonic()
        async with trio.open_nursery() as loads:
            while True:
                now = time.monotonic()
                if now - looked >= STORE_EVERY:
                    await self._look_at_store()
                    looked = now
                for action in self.placement.decide(
                    now, self.board.merged(now), self._here(now), self._room()
                ):
                    if action.kind == "load":
                        loads.start_soon(self._load_wanted, action.model)
                    else:
                        loads.start_soon(self._unload_idle, action.model)
                await trio.sleep(PLACE_EVERY)

    def _here(self, now: float) -> dict[str, Here]:
        return {
            h.spec.id: Here(
                h.state,
                0.0 if h.scheduler is None else h.scheduler.idle_for,
                now - h.ready_at if h.state == "ready" else 0.0,
            )
            for h in self.roster
        }

    def _room(self) -> dict[str, bool]:
        """Per allowed model on disk: whether its weights fit the free memory less the
        reserve (unknown sizes are left to admission)."""
        free = self.hardware.memory_free - self.policy.reserve_bytes
        return {m: size is None or size <= free for m, size in self._stored.items()}

    async def _load_wanted(self, model: str) -> None:
        logger.info("%s: wanted by the swarm, loading", model)
        spec = ModelSpec(model, slots=self.config.slots)
        try:
            await self._load(spec, self._make(spec))
        except Exception as exc:  # advertised as failed; tried again after retry_after
            logger.warning("%s: could not load on demand: %s", model, exc)
            self.placement.failed(model, time.monotonic())

    async def _unload_idle(self, model: str) -> None:
        logger.info("%s: idle, unloading", model)
        try:
            await self.unload_model(Unload(model))
        except (Busy, KeyError) as exc:  # it changed state meanwhile: decided again soon
            logger.info("%s: not unloaded: %s", model, exc)

    def _status_models(self) -> None:
        ready = sorted(h.spec.id for h in self.roster if h.state == "ready")
        self.status.update(models=ready)

    async def _refresh_now(self) -> None:
        self.hardware = await trio.to_thread.run_sync(_refresh, self.hardware)

    # The node's life.

    async def run(self) -> None:
        """Serve until SIGINT or SIGTERM: drain if serving, stop at once if still starting."""
        self.status.update(role="node", state="starting", pid=os.getpid())
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as top:
                serving = trio.Event()
                top.start_soon(self._stop_on_signal, signals, serving, top.cancel_scope)
                await self._serve(serving)
        self.status.update(state="stopped")

    async def _stop_on_signal(
        self, signals: Any, serving: trio.Event, everything: trio.CancelScope
    ) -> None:
        async for _ in signals:
            break
        if serving.is_set():
            await self.drain()
        else:  # nothing to drain, and a model still loading must not hold up the exit
            logger.info("stopping while starting")
        everything.cancel()

    async def _serve(self, serving: trio.Event) -> None:
        config = self.config
        self.hardware = await trio.to_thread.run_sync(_probe)
        metrics = self._metrics() if config.metrics_port is not None else None
        handlers = (
            self.service.handlers if metrics is None else metrics.instrument(self.service.handlers)
        )
        async with (
            self.host.running(config.listen, config.bootstrap),
            trio.open_nursery() as nursery,
        ):
            serve_rpc(self.host, handlers)
            self.status.update(peer_id=self.host.peer_id, addrs=self.host.addrs(), state="loading")
            logger.info("node %s listening on %s", self.host.peer_id, " ".join(self.host.addrs()))
            if metrics is not None:
                port = config.metrics_port or 0
                url = await nursery.start(metrics.serve, config.metrics_host, port)
                self.status.update(metrics_url=url)
                logger.info("metrics on %s", url)
            # An unexpected error in either is logged and the task started again.
            nursery.start_soon(supervised, "advertiser", self.advertiser.run)
            nursery.start_soon(supervised, "gateway reach", partial(keep_reaching, self.host))
            if self.host.nat.settings.reachability != "public":
                reserved = partial(keep_reserved, self.host, self.advertiser.publish_now)
                nursery.start_soon(supervised, "relay slots", reserved)
            if config.mdns and on_lan(config.listen):
                nursery.start_soon(supervised, "mdns", partial(discover_on_lan, self.host))
            nursery.start_soon(supervised, "memory refresh", self._refresh_hardware)
            if self.policy.enabled:
                await self._look_at_store()
                nursery.start_soon(supervised, "placement", self._place)
            async with trio.open_nursery() as loaders:
                for spec in self.specs:
                    loaders.start_soon(self._load_at_start, spec, self._make(spec))
                for engine in self.engines:
                    loaders.start_soon(
                        self._load_at_start,
                        ModelSpec(engine.id, slots=engine.slots),
                        _engine_maker(engine),
                    )
            if any(h.state == "ready" for h in self.roster):
                self.status.update(state="ready", message="ready")
            serving.set()
            await trio.sleep_forever()

    def _metrics(self) -> NodeMetrics:
        hw = self.hardware
        return NodeMetrics(
            self.service.load,
            lambda: self.hardware,
            lambda: [h.spec.id for h in self.roster if h.runner is not None],
            {
                "peer_id": self.host.peer_id,
                "version": VERSION,
                "backend": hw.backend,
                "device": hw.device_name,
            },
        )

    async def drain(self) -> None:
        """Announce ``draining``, finish the calls in hand, take no new ones."""
        logger.info("draining: finishing %d calls", self.roster.inflight + self.roster.queued)
        self.status.update(state="draining")
        self.roster.drain()
        with trio.move_on_after(3):  # a dead peer in the DHT must not hold up shutdown
            await self.advertiser.publish()
        with trio.move_on_after(DRAIN_TIMEOUT):
            await self.roster.wait_idle()
        for held in self.roster:
            if held.runner is not None:
                held.runner.close()

    async def _refresh_hardware(self) -> None:
        while True:
            await trio.sleep(5)
            await self._refresh_now()


def _engine_maker(spec: EngineSpec) -> Callable[[Progress], ModelRunner]:
    return lambda progress: EngineRunner.start(spec)
