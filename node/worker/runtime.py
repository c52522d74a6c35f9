"""A node process: join the swarm, load models, advertise, serve, drain on shutdown."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import replace

import trio

import keys
from keys.files import raw_public
from node.p2p.admission import serve_rpc
from node.p2p.advertise import Advertiser
from node.p2p.host import PeerHost
from node.p2p.readiness import StatusFile
from node.p2p.version import VERSION
from node.worker.config import NodeConfig
from node.worker.handlers import NodeService
from node.worker.loading import load_runner, task_of
from node.worker.metrics import NodeMetrics
from node.worker.runners import EngineRunner, EngineSpec, ModelRunner, Progress
from node.worker.scheduler import Scheduler
from protocols import Hardware, ModelInfo, NodeRecord

logger = logging.getLogger(__name__)

DRAIN_TIMEOUT = 30.0


def _probe() -> Hardware:
    from node.worker.hardware import probe

    return probe()


def _refresh(hardware: Hardware) -> Hardware:
    from node.worker.hardware import refresh_free

    return refresh_free(hardware)


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        # Checked first, so a mistake in the config stops the node before anything else.
        self.engines = [EngineSpec.from_config(table) for table in config.engines]
        self.status = StatusFile(config.ready_file)
        self.identity = keys.identity(config.data_dir)
        self.certificate = keys.certificate(config.data_dir, "node")
        self.host = PeerHost(self.identity, keys.operator_public(config.data_dir))
        self.runners: dict[str, ModelRunner] = {}
        models = [*config.models, *(e.id for e in self.engines)]
        self.loading: dict[str, str] = {m: "loading" for m in models}
        self.hardware = Hardware("cpu", "unknown", "RAM", 0, 0)
        capacity = config.capacity or max(1, len(models))
        self.scheduler = Scheduler(capacity, config.max_queue)
        self.advertiser = Advertiser(
            self.host, self.identity, self.certificate, self._record, config.record_ttl
        )
        self.service = NodeService(
            self.runners,
            self.scheduler,
            lambda: self.hardware.memory_free,
            lambda: (self.advertiser.seq, self.advertiser.signed),
        )

    def _record(self, seq: int, now: float) -> NodeRecord:
        draining = self.scheduler.draining
        models = [
            replace(r.info, state="draining") if draining else r.info for r in self.runners.values()
        ]
        models += [
            ModelInfo(m, task_of(m), "", 0, 0, "loading")
            for m, state in self.loading.items()
            if state == "loading"
        ]
        return NodeRecord(
            peer_id=self.host.peer_id,
            public_key=raw_public(self.identity),
            role="node",
            version=VERSION,
            addrs=self.host.addrs(),
            hardware=self.hardware,
            models=models,
            load=self.service.load(),
            seq=seq,
            issued_at=now,
            ttl=self.config.record_ttl,
        )

    async def _start_engine(self, spec: EngineSpec) -> None:
        await self._load(spec.id, lambda progress: EngineRunner.start(spec))

    async def _load_model(self, model: str) -> None:
        await self._load(
            model,
            lambda progress: load_runner(
                model,
                self.config.model_store or self.config.data_dir,
                self.hardware.backend,
                progress,
                self.config.echo_delay,
                self.config.slots,
                lambda: _refresh(self.hardware).memory_free,
            ),
        )

    async def _load(self, model: str, make: Callable[[Progress], ModelRunner]) -> None:
        """Make ``model``'s runner in a worker thread, reporting progress, and serve it."""

        def progress(message: str, fraction: float | None) -> None:
            shown = f" {fraction:.0%}" if fraction is not None else ""
            logger.info("%s: %s%s", model, message, shown)
            trio.from_thread.run_sync(
                lambda: self.status.update(message=f"{model}: {message}", progress=fraction)
            )

        try:
            runner = await trio.to_thread.run_sync(make, progress)
        except Exception as exc:
            logger.error("cannot load %s: %s", model, exc)
            self.loading[model] = "failed"
            self.status.update(state="failed", message=f"{model}: {exc}")
            return
        self.runners[model] = runner
        self.service.runners[model] = runner
        del self.loading[model]
        logger.info("%s: ready (%s)", model, runner.info.dtype)
        if self.config.capacity == 0:
            self.scheduler.set_capacity(sum(r.info.max_batch for r in self.runners.values()))
        self.advertiser.republish_soon()

    async def run(self) -> None:
        config = self.config
        self.status.update(role="node", state="starting", pid=os.getpid())
        self.hardware = await trio.to_thread.run_sync(_probe)
        metrics = self._metrics() if config.metrics_port is not None else None
        handlers = (
            self.service.handlers if metrics is None else metrics.instrument(self.service.handlers)
        )
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with (
                self.host.running(config.listen, config.bootstrap),
                trio.open_nursery() as nursery,
            ):
                serve_rpc(self.host, keys.operator_public(config.data_dir), handlers)
                self.status.update(
                    peer_id=self.host.peer_id, addrs=self.host.addrs(), state="loading"
                )
                logger.info(
                    "node %s listening on %s", self.host.peer_id, " ".join(self.host.addrs())
                )
                if metrics is not None:
                    port = config.metrics_port or 0
                    url = await nursery.start(metrics.serve, config.metrics_host, port)
                    self.status.update(metrics_url=url)
                    logger.info("metrics on %s", url)
                nursery.start_soon(self.advertiser.run)
                nursery.start_soon(self._refresh_hardware)
                async with trio.open_nursery() as loaders:
                    for model in config.models:
                        loaders.start_soon(self._load_model, model)
                    for spec in self.engines:
                        loaders.start_soon(self._start_engine, spec)
                if self.runners:
                    self.status.update(state="ready", models=sorted(self.runners), message="ready")
                async for _ in signals:
                    break
                await self.drain()
                nursery.cancel_scope.cancel()

    def _metrics(self) -> NodeMetrics:
        hw = self.hardware
        return NodeMetrics(
            self.service.load,
            lambda: self.hardware,
            lambda: self.runners,
            {
                "peer_id": self.host.peer_id,
                "version": VERSION,
                "backend": hw.backend,
                "device": hw.device_name,
            },
        )

    async def drain(self) -> None:
        """Announce ``draining``, finish the calls in hand, take no new ones."""
        logger.info("draining: finishing %d calls", self.scheduler.inflight + self.scheduler.queued)
        self.status.update(state="draining")
        self.scheduler.drain()
        with trio.move_on_after(3):  # a dead peer in the DHT must not hold up shutdown
            await self.advertiser.publish()
        with trio.move_on_after(DRAIN_TIMEOUT):
            await self.scheduler.wait_idle()
        for runner in self.runners.values():
            runner.close()
        self.status.update(state="stopped")

    async def _refresh_hardware(self) -> None:
        while True:
            await trio.sleep(5)
            self.hardware = await trio.to_thread.run_sync(_refresh, self.hardware)
