"""Serves RPC calls on one stream: one read loop, one locked writer, a task per call.

Handlers live in an explicit table (``{"generate": handler, ...}``). A handler gets the
request's params and an ``emit`` callable for stream chunks, and returns the final
``End`` data, or raises ``RpcError``. Whatever a peer sends, nothing escapes
``serve``: py-libp2p ends the whole process when a stream handler raises.

What one peer may hold is bounded, so it cannot starve the others: its first frame is a
``Hello`` of at most ``HELLO_MAX_FRAME`` bytes that must arrive within
``HELLO_TIMEOUT``; it may keep ``MAX_STREAMS_PER_PEER`` streams open and run
``MAX_CALLS_PER_STREAM`` calls on one stream and ``MAX_CALLS_PER_PEER`` in all. Past a
limit the stream or call is refused with ``OVERLOADED``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import trio

from node.p2p.logs import set_request_id
from node.p2p.messages import MessageStream
from node.p2p.streams import ByteStream, StreamBroken
from protocols import (
    DEFAULT_MAX_FRAME,
    HELLO_MAX_FRAME,
    Cancel,
    Chunk,
    End,
    Error,
    ErrorCode,
    Hello,
    Message,
    ProtocolError,
    RemoteProtocolError,
    Request,
)

logger = logging.getLogger(__name__)

HELLO_TIMEOUT = 5.0
# A gateway holds one stream per node (and a light client one per peer); a few more cover
# a stream being replaced while the old one closes.
MAX_STREAMS_PER_PEER = 8
MAX_CALLS_PER_STREAM = 256
MAX_CALLS_PER_PEER = 512


class RpcError(Exception):
    """A failure to report to the caller with a code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Caller:
    """Who is calling: the Noise-authenticated peer id and the role its certificate grants."""

    peer_id: str
    role: str


Emit = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[dict[str, Any], Caller, Emit], Awaitable[dict[str, Any]]]
# Checks a Hello certificate for the remote peer; returns the caller or raises RpcError.
Authorize = Callable[[bytes, str], Caller]


def _log_call(request: Request, caller: Caller, reply: Message | None, took: float) -> None:
    """One line per call: at info for calls serving an HTTP call (they carry its request
    id), at debug for the swarm's own upkeep (status, watch, record)."""
    outcome = reply.code.value if isinstance(reply, Error) else "ok" if reply else "caller gone"
    level = logging.INFO if request.request_id else logging.DEBUG
    logger.log(
        level,
        "rpc %s from %s %s: %s in %.0f ms",
        request.method,
        caller.role,
        caller.peer_id,
        outcome,
        took * 1000,
    )


class _Connection(MessageStream):
    """One caller's stream, with the calls it has running."""

    def __init__(self, stream: ByteStream, max_frame: int) -> None:
        super().__init__(stream, max_frame, first_max_frame=min(max_frame, HELLO_MAX_FRAME))
        self.calls: dict[int, trio.CancelScope] = {}


class RpcServer:
    def __init__(
        self,
        handlers: Mapping[str, Handler],
        authorize: Authorize,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self._handlers = dict(handlers)
        self._authorize = authorize
        self._max_frame = max_frame
        self._streams: Counter[str] = Counter()  # open streams per peer
        self._calls: Counter[str] = Counter()  # calls running per peer

    async def serve(self, stream: ByteStream, remote_peer: str) -> None:
        """Serve every call arriving on ``stream`` until it ends. Never raises."""
        conn = _Connection(stream, self._max_frame)
        self._streams[remote_peer] += 1
        try:
            if self._streams[remote_peer] > MAX_STREAMS_PER_PEER:
                await self._refuse(conn, ErrorCode.OVERLOADED, "too many streams from this peer")
                return
            async with trio.open_nursery() as nursery:
                try:
                    await self._read_loop(conn, remote_peer, nursery)
                except StreamBroken as exc:
                    logger.debug("rpc stream from %s broke: %r", remote_peer, exc)
                nursery.cancel_scope.cancel()  # the caller went away: stop its work
        except Exception:
            logger.exception("rpc stream from %s failed", remote_peer)
        finally:
            self._streams[remote_peer] -= 1
            if not self._streams[remote_peer]:
                del self._streams[remote_peer]
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.close()

    async def _read_loop(self, conn: _Connection, remote_peer: str, nursery: trio.Nursery) -> None:
        caller: Caller | None = None
        hello_by = trio.current_time() + HELLO_TIMEOUT
        while True:
            messages: list[Message] | None = []
            try:
                with trio.move_on_at(hello_by if caller is None else math.inf) as waiting:
                    messages = await conn.receive()
            except RemoteProtocolError as exc:
                await self._refuse(conn, ErrorCode.BAD_REQUEST, str(exc))
                return
            if waiting.cancelled_caught:
                await self._refuse(conn, ErrorCode.UNAUTHORIZED, "no hello in time")
                return
            if messages is None:
                return
            for message in messages:
                if caller is None:
                    if not isinstance(message, Hello):
                        await self._refuse(conn, ErrorCode.UNAUTHORIZED, "send hello first")
                        return
                    try:
                        caller = self._authorize(message.certificate, remote_peer)
                    except RpcError as exc:
                        await self._refuse(conn, exc.code, exc.message)
                        return
                elif isinstance(message, Request):
                    await self._start(conn, caller, message, nursery)
                elif isinstance(message, Cancel):
                    scope = conn.calls.get(message.id)
                    if scope is not None:
                        scope.cancel()
                else:
                    await self._refuse(conn, ErrorCode.BAD_REQUEST, "unexpected frame")
                    return

    async def _refuse(self, conn: _Connection, code: ErrorCode, message: str) -> None:
        logger.info("closing rpc stream: %s %s", code.value, message)
        with suppress(StreamBroken, ProtocolError):
            await conn.send(Error(0, code, message))

    async def _start(
        self, conn: _Connection, caller: Caller, request: Request, nursery: trio.Nursery
    ) -> None:
        if request.id in conn.calls:
            await conn.send(Error(request.id, ErrorCode.BAD_REQUEST, "duplicate call id"))
            return
        if len(conn.calls) >= MAX_CALLS_PER_STREAM:
            await conn.send(Error(request.id, ErrorCode.OVERLOADED, "too many calls on stream"))
            return
        if self._calls[caller.peer_id] >= MAX_CALLS_PER_PEER:
            await conn.send(Error(request.id, ErrorCode.OVERLOADED, "too many calls from peer"))
            return
        handler = self._handlers.get(request.method)
        if handler is None:
            await conn.send(
                Error(request.id, ErrorCode.BAD_REQUEST, f"unknown method {request.method!r}")
            )
            return
        scope = trio.CancelScope()
        if request.timeout_ms is not None:
            scope.relative_deadline = request.timeout_ms / 1000
        conn.calls[request.id] = scope
        self._calls[caller.peer_id] += 1
        nursery.start_soon(self._run_call, conn, caller, request, handler, scope)

    async def _run_call(
        self,
        conn: _Connection,
        caller: Caller,
        request: Request,
        handler: Handler,
        scope: trio.CancelScope,
    ) -> None:
        async def emit(data: dict[str, Any]) -> None:
            await conn.send(Chunk(request.id, data))

        # This task's lines, and the tasks it starts, name the HTTP call it serves.
        set_request_id(request.request_id)
        began = time.perf_counter()
        reply: Message | None = None
        try:
            with scope:
                try:
                    result = await handler(request.params, caller, emit)
                    reply = End(request.id, result)
                except RpcError as exc:
                    reply = Error(request.id, exc.code, exc.message)
                except (StreamBroken, trio.Cancelled):
                    raise
                except Exception as exc:
                    logger.exception("rpc %s failed", request.method)
                    reply = Error(request.id, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
            if scope.cancelled_caught:
                timed_out = scope.deadline != math.inf and trio.current_time() >= scope.deadline
                reply = (
                    Error(request.id, ErrorCode.DEADLINE_EXCEEDED, "deadline exceeded")
                    if timed_out
                    else Error(request.id, ErrorCode.CANCELLED, "cancelled by caller")
                )
            if reply is not None:
                await conn.send(reply)
        except StreamBroken:
            pass  # the caller is gone; the read loop ends the connection
        finally:
            _log_call(request, caller, reply, time.perf_counter() - began)
            conn.calls.pop(request.id, None)
            self._calls[caller.peer_id] -= 1
            if not self._calls[caller.peer_id]:
                del self._calls[caller.peer_id]
