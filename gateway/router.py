"""Routes a generation to the least-loaded node that has the model, with failover.

A node that cannot be reached, refuses (OVERLOADED, draining) or vanishes before its
first reply is skipped and the next one tried, transparently: the user is charged once,
for the call that answered. A failure after the first token ends that stream with an
error, since the tokens already sent cannot be taken back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from gateway.peer_table import PeerTable
from gateway.tracker import Tracker
from node.rpc_client import Call, CallFailed, ConnectionLost, RemoteError
from protocols import ErrorCode, GenerateParams

logger = logging.getLogger(__name__)

RETRYABLE = {ErrorCode.OVERLOADED, ErrorCode.UNAVAILABLE, ErrorCode.MODEL_NOT_FOUND}
MAX_ATTEMPTS = 3


class RoutingError(Exception):
    pass


class UnknownModel(RoutingError):
    def __init__(self, model: str, available: list[str]) -> None:
        listed = ", ".join(available) if available else "none"
        super().__init__(f"model {model!r} is not served by any node (available: {listed})")
        self.available = available


class NoPeerReady(RoutingError):
    """The model exists in the swarm but no node can take the call now."""


class UpstreamError(RoutingError):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Generation:
    """An answered call: ``deltas()`` yields text; ``usage`` is filled at the end."""

    peer_id: str
    call: Call
    first: dict[str, Any] | None
    usage: dict[str, Any] = field(default_factory=dict)

    async def deltas(self) -> AsyncIterator[str]:
        try:
            if self.first is not None:
                yield str(self.first.get("text", ""))
            async for chunk in self.call:
                yield str(chunk.get("text", ""))
        except RemoteError as exc:
            raise UpstreamError(exc.code, f"node failed mid-answer: {exc.message}") from exc
        except ConnectionLost as exc:
            raise UpstreamError(ErrorCode.UNAVAILABLE, f"node lost mid-answer: {exc}") from exc
        self.usage = self.call.result or {}

    async def text(self) -> str:
        return "".join([piece async for piece in self.deltas()])


class Router:
    def __init__(self, table: PeerTable, tracker: Tracker) -> None:
        self.table = table
        self.tracker = tracker
        self.retries = 0

    def models(self) -> list[str]:
        return sorted(self.table.models())

    def serving(self) -> dict[str, list[dict[str, Any]]]:
        """Model id → the nodes that list it, with state and load."""
        now = time.time()
        return {
            model: [
                {
                    "peer_id": e.peer_id,
                    "state": next(m.state for m in e.record.models if m.id == model),
                    "healthy": not e.suspect(now) and not e.load.draining,
                    "inflight": e.load.inflight,
                    "queued": e.load.queued,
                    "capacity": e.load.capacity,
                }
                for e in entries
            ]
            for model, entries in self.table.models().items()
        }

    async def _candidates(self, model: str, tried: set[str]) -> list[str]:
        if model not in self.table.models():
            await self.tracker.find_model(model)
            if model not in self.table.models():
                raise UnknownModel(model, self.models())
        now = time.time()
        return [
            e.peer_id
            for e in self.table.candidates(model, now, tried)
            if e.peer_id in self.tracker.clients
        ]

    def _why_none(self, model: str) -> str:
        states = [
            f"{e.peer_id[-8:]}: {m.state}{' (draining)' if e.load.draining else ''}"
            f"{' (not responding)' if e.suspect(time.time()) else ''}"
            for e in self.table.models().get(model, [])
            for m in e.record.models
            if m.id == model
        ]
        return f"no node can take {model!r} now ({'; '.join(states) or 'none connected'})"

    def _ended(self, peer: str) -> None:
        entry = self.table.entries.get(peer)
        if entry is not None:
            entry.local_delta -= 1

    @asynccontextmanager
    async def generate(self, params: GenerateParams, timeout: float) -> AsyncIterator[Generation]:
        tried: set[str] = set()
        last_error = ""
        for _ in range(MAX_ATTEMPTS):
            peers = await self._candidates(params.model, tried)
            if not peers:
                break
            peer = peers[0]
            tried.add(peer)
            client = self.tracker.clients.get(peer)
            entry = self.table.entries.get(peer)
            if client is None or entry is None:
                continue
            entry.local_delta += 1
            async with AsyncExitStack() as stack:
                stack.callback(self._ended, peer)
                try:
                    call = await stack.enter_async_context(
                        client.open_call("generate", params.to_wire(), timeout)
                    )
                    first = await anext(call, None)
                except RemoteError as exc:
                    if exc.code not in RETRYABLE:
                        raise UpstreamError(exc.code, exc.message) from exc
                    last_error = exc.message
                except ConnectionLost as exc:
                    if exc.started:
                        raise UpstreamError(ErrorCode.UNAVAILABLE, str(exc)) from exc
                    last_error = str(exc)
                except CallFailed as exc:
                    last_error = str(exc)
                else:
                    yield Generation(peer, call, first)
                    return
            self.retries += 1
            logger.info("node %s did not take the call (%s); trying another", peer[-8:], last_error)
        reason = self._why_none(params.model)
        raise NoPeerReady(f"{reason}; last error: {last_error}" if last_error else reason)
