"""A peer's log: one line per event, as text for people or as JSON for machines.

Every line names this process's peer and, while a call is served, its request id: the
gateway takes it from the HTTP call (``gateway.api.request_ids``), the RPC client sends it
with the call (``protocols.rpc.Request``), and the node's RPC server sets it for the
call's task, so one grep finds a call's lines on every peer. The id lives in a context
variable: trio gives each task a copy of its parent's context.

Only entry points call ``configure``; modules log through ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from types import TracebackType
from typing import IO, Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

FORMATS = ("text", "json")
FORMAT_ENV = "BITINGLIP_LOG_FORMAT"

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
_peer = ""  # this process's peer id, once its host has one


def current_request_id() -> str | None:
    """The request id of the call this task serves, if any."""
    return _request_id.get()


def set_request_id(request_id: str | None) -> None:
    """Name the call this task (and the tasks it starts from now on) serves."""
    _request_id.set(request_id)


def outside_calls(task: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """``task`` run with no request id. For tasks a call may start but that outlive it (a
    connection opened to serve the call's model): they would otherwise carry the call's id
    on every line, and on every RPC call, for as long as they run."""

    @functools.wraps(task)
    async def apart(*args: P.args, **kwargs: P.kwargs) -> T:
        set_request_id(None)
        return await task(*args, **kwargs)

    return apart


def new_request_id() -> str:
    """A fresh id: 24 hex digits, unlikely to meet another in a swarm's lifetime."""
    return secrets.token_hex(12)


def set_peer(peer_id: str) -> None:
    """Name this process's peer in every line logged from now on."""
    global _peer
    _peer = peer_id


def log_format(flag: str | None) -> str:
    """The format asked for: the flag, else ``$BITINGLIP_LOG_FORMAT``, else text.
    ``ValueError`` for any other name."""
    chosen = flag or os.environ.get(FORMAT_ENV) or "text"
    if chosen not in FORMATS:
        raise ValueError(f"log format {chosen!r} is not one of {', '.join(FORMATS)}")
    return chosen


class _Context(logging.Filter):
    """Stamps each record with the peer and the request id: handlers, not loggers, hold
    it, so records from every library (hypercorn, libp2p) get them too."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.peer = _peer
        record.request_id = _request_id.get()
        return True


class TextFormatter(logging.Formatter):
    """``12:00:01 INFO    gateway.runtime [req 5f2a…]: message`` on one line: line breaks
    in a message or a traceback are written as ``\\n`` (and ``\\r``)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(call)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        record.call = f" [req {request_id}]" if request_id else ""
        # A line break a caller put in a path must not start a line that looks like ours.
        return super().format(record).replace("\r", "\\r").replace("\n", "\\n")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, peer, and
    request_id and exc (the traceback) when there are some."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "peer": getattr(record, "peer", "") or None,
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            line["request_id"] = request_id
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def _iso(created: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{whole}.{int(created % 1 * 1000):03d}Z"


def handler(fmt: str, stream: IO[str]) -> logging.Handler:
    """A handler writing lines in ``fmt`` (text or json) to ``stream``, each stamped with
    the peer and the request id."""
    out = logging.StreamHandler(stream)
    out.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    out.addFilter(_Context())
    return out


def configure(level: str = "info", fmt: str = "text") -> None:
    """Send every log line of this process to stderr in ``fmt``, at ``level`` and above
    (an unknown level name means info). Python warnings and an uncaught exception are
    logged too, so they are one line each like the rest."""
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler(fmt, sys.stderr))
    root.setLevel(logging.getLevelNamesMapping().get(level.upper(), logging.INFO))
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    logging.getLogger("bitinglip").critical("uncaught %s", kind.__name__, exc_info=error)
