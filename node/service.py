"""The node's RPC methods: generate, status, watch.

``generate`` streams text deltas as chunks and ends with usage; ``watch`` streams the
node's live load whenever it changes (coalesced) and at least every second, which is
how gateways see load far fresher than the DHT record can carry it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from typing import Any

import trio

from node.rpc_server import Caller, Emit, Handler, RpcError
from node.runners.base import Delta, Runner
from node.scheduler import Draining, Overloaded, Scheduler
from protocols import ErrorCode, GenerateParams, Load, RemoteProtocolError

logger = logging.getLogger(__name__)

WATCH_INTERVAL = 1.0
WATCH_COALESCE = 0.05


class NodeService:
    def __init__(
        self,
        runners: Mapping[str, Runner],
        scheduler: Scheduler,
        vram_free: Callable[[], int],
        signed_record: Callable[[], tuple[int, bytes]] = lambda: (0, b""),
    ) -> None:
        self.runners = dict(runners)
        self.scheduler = scheduler
        self._vram_free = vram_free
        self._signed_record = signed_record

    @property
    def handlers(self) -> dict[str, Handler]:
        return {
            "generate": self.rpc_generate,
            "status": self.rpc_status,
            "watch": self.rpc_watch,
            "record": self.rpc_record,
        }

    def load(self) -> Load:
        s = self.scheduler
        return Load(
            s.inflight,
            s.queued,
            s.capacity,
            round(s.tokens_per_s, 2),
            self._vram_free(),
            s.draining,
        )

    async def rpc_status(
        self, params: dict[str, Any], caller: Caller, emit: Emit
    ) -> dict[str, Any]:
        return asdict(self.load())

    async def rpc_record(
        self, params: dict[str, Any], caller: Caller, emit: Emit
    ) -> dict[str, Any]:
        """The node's current signed DHT record, fresher than any DHT copy."""
        seq, signed = self._signed_record()
        return {"seq": seq, "record": signed}

    async def rpc_watch(self, params: dict[str, Any], caller: Caller, emit: Emit) -> dict[str, Any]:
        while True:
            seen = self.scheduler.version
            await emit(asdict(self.load()) | {"record_seq": self._signed_record()[0]})
            sent = trio.current_time()
            with trio.move_on_after(WATCH_INTERVAL):
                await self.scheduler.wait_changed(seen)
                # The first change goes out at once; a burst right after it is folded
                # into one update per WATCH_COALESCE.
                await trio.sleep_until(sent + WATCH_COALESCE)

    async def rpc_generate(
        self, params: dict[str, Any], caller: Caller, emit: Emit
    ) -> dict[str, Any]:
        if caller.role != "gateway":
            raise RpcError(ErrorCode.UNAUTHORIZED, "only gateways may run inference")
        try:
            request = GenerateParams.from_wire(params)
        except RemoteProtocolError as exc:
            raise RpcError(ErrorCode.BAD_REQUEST, str(exc)) from exc
        runner = self.runners.get(request.model)
        if runner is None:
            raise RpcError(ErrorCode.MODEL_NOT_FOUND, f"this node does not serve {request.model!r}")
        try:
            async with self.scheduler.slot():
                return await self._generate(runner, request, emit)
        except Overloaded as exc:
            raise RpcError(ErrorCode.OVERLOADED, str(exc)) from exc
        except Draining as exc:
            raise RpcError(ErrorCode.UNAVAILABLE, str(exc)) from exc

    async def _generate(
        self, runner: Runner, request: GenerateParams, emit: Emit
    ) -> dict[str, Any]:
        cancelled = threading.Event()
        try:
            deltas = runner.generate(request, cancelled)
        except ValueError as exc:
            raise RpcError(ErrorCode.BAD_REQUEST, str(exc)) from exc
        started = time.monotonic()
        last: Delta | None = None
        try:
            while True:
                delta = await trio.to_thread.run_sync(_next_delta, deltas)
                if delta is None:
                    break
                last = delta
                if delta.text:
                    await emit({"text": delta.text})
                if delta.finish_reason is not None:
                    break
        finally:
            # Tells the runner to stop between tokens when the caller has gone away.
            cancelled.set()
        if last is None:
            raise RpcError(ErrorCode.INTERNAL, "the model produced nothing")
        self.scheduler.record_speed(last.completion_tokens, time.monotonic() - started)
        return {
            "finish_reason": last.finish_reason or "stop",
            "prompt_tokens": last.prompt_tokens,
            "completion_tokens": last.completion_tokens,
        }


def _next_delta(deltas: Iterator[Delta]) -> Delta | None:
    try:
        return next(deltas)
    except ValueError as exc:
        raise RpcError(ErrorCode.BAD_REQUEST, str(exc)) from exc
    except StopIteration:
        return None
