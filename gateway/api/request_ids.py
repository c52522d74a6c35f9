"""Every HTTP call gets a request id, and one log line when it ends.

The id is the caller's ``X-Request-Id`` when it is a safe one (``protocols.is_request_id``:
short, no spaces or quotes, fit for a log line), else a fresh one. It is sent back in the
``X-Request-Id`` response header, errors included, is in every log line of the call
(``node.p2p.logs``), in error bodies (``openai_api.error_body``), and goes to the node
with the RPC call, so the node's lines for the call carry it too.
"""

from __future__ import annotations

import logging
import time

from starlette.types import Message, Receive, Scope, Send

from gateway.api.asgi import HttpMiddleware
from node.p2p.logs import new_request_id, set_request_id
from protocols import is_request_id

logger = logging.getLogger(__name__)

HEADER = "X-Request-Id"
_HEADER_KEY = HEADER.lower().encode()
# Polled every second or so by supervisors and scrapers: their lines only at debug.
_PROBES = frozenset({"/health", "/metrics"})


def request_id_of(scope: Scope) -> str:
    """The caller's request id if it is a safe one, else a new one."""
    sent = dict(scope.get("headers", [])).get(_HEADER_KEY, b"").decode("latin-1")
    return sent if is_request_id(sent) else new_request_id()


class RequestIds(HttpMiddleware):
    """Names each HTTP call for the length of it (this task and those it starts), answers
    with the name in a header, and logs the call's method, path, status and time."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = request_id_of(scope)
        set_request_id(request_id)
        began = time.perf_counter()
        status = 0

        async def named(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != _HEADER_KEY]
                message = {**message, "headers": [*headers, (_HEADER_KEY, request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, named)
        finally:
            path = scope.get("path", "")
            logger.log(
                logging.DEBUG if path in _PROBES else logging.INFO,
                "%s %s %s in %.0f ms",
                scope.get("method", ""),
                path,
                status or "no response",
                (time.perf_counter() - began) * 1000,
            )
