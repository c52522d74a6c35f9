"""HTTP errors in OpenAI's shape, and the request-size guard.

Every failure a client can cause becomes an ``ApiError`` with a 4xx status and a body
``{"error": {"message", "type", "param", "code", "request_id"}}`` (the last names the call,
``gateway.api.request_ids``); nothing a client sends yields a 5xx.
This is the one place where the domain's errors (the accounts' refusals, routing failures)
become HTTP errors.

What a node says about a failure is peer text: users see a code and a short sentence, never
a node's internals (a traceback, a file path, an exception's repr). A node's own words pass
only for the codes where they tell the user what to change (a prompt too long), cut to one
short line; the whole text is logged here.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.accounts.errors import Busy, LimitReached, Refused
from gateway.api import openai_api as oa
from gateway.api.asgi import HttpMiddleware
from gateway.routing.router import WAIT_AWAY, NoPeerReady, UnknownModel, UpstreamError
from protocols import ErrorCode

logger = logging.getLogger(__name__)

# What users are told when a node fails, by code; a node's own words are dropped.
NODE_FAILURES = {
    ErrorCode.INTERNAL: "the node failed to run the model",
    ErrorCode.UNAUTHORIZED: "the node refused this gateway",
    ErrorCode.NO_MEMORY: "the node has no memory for the model",
    ErrorCode.CANCELLED: "the node cancelled the call",
    ErrorCode.DEADLINE_EXCEEDED: "the node did not answer in time",
}
MAX_NODE_MESSAGE = 200
# Two or more path segments with a letter each: /home/x/model.py, C:\Users\x (not 1/0/8).
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][\w.~@+-]*[A-Za-z_][\w.~@+-]*){2,}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = oa.error_body(status, message, code, param)
        self.headers = headers or {}


def refusal(exc: Refused) -> ApiError:
    """The HTTP face of what the accounts refuse: the status they suggest, and for a limit,
    when to retry and the caller's limits."""
    headers = {}
    if isinstance(exc, LimitReached):
        headers = exc.headers | {"Retry-After": str(exc.retry_after)}
    elif isinstance(exc, Busy):
        headers = {"Retry-After": str(exc.retry_after)}
    return ApiError(exc.status_hint, exc.message, exc.code, exc.param, headers=headers)


# Request fields a node may refuse for its model.
NODE_FIELDS = frozenset(
    {"messages", "tools", "tool_choice", "response_format", "logprobs", "top_logprobs"}
)


def routing_error(exc: Exception) -> ApiError:
    """The HTTP face of a routing failure."""
    if isinstance(exc, UnknownModel):
        return ApiError(404, str(exc), "model_not_found", "model")
    if isinstance(exc, NoPeerReady):
        # The queue's estimate, or the router's guess from the nodes' states: a client told
        # when to come back does not hammer the gateway meanwhile.
        wait = exc.retry_after
        seconds = WAIT_AWAY if wait is None or math.isinf(wait) else max(1, math.ceil(wait))
        later = {"Retry-After": str(seconds)}
        return ApiError(503, node_text(str(exc)), "no_peer_ready", headers=later)
    if isinstance(exc, UpstreamError):
        status = {ErrorCode.BAD_REQUEST: 400, ErrorCode.DEADLINE_EXCEEDED: 504}.get(exc.code, 502)
        message = upstream_message(exc)
        # A node names the field it cannot honour first ("tools: ..."): so does the error.
        named = message.partition(":")[0]
        param = named if status == 400 and named in NODE_FIELDS else None
        return ApiError(status, message, exc.code.value.lower(), param)
    raise exc


def upstream_message(exc: UpstreamError) -> str:
    """What a user is told of a node's failure; the node's whole text goes to the log."""
    logger.warning("node failure %s: %s", exc.code.value, exc)
    return NODE_FAILURES.get(exc.code) or node_text(str(exc))


def node_text(text: str) -> str:
    """A node's words made fit to show: one line, no control characters, no file paths,
    at most ``MAX_NODE_MESSAGE`` characters."""
    line = _CONTROL.sub("", text.strip().split("\n", 1)[0])
    line = _PATH.sub("…", line).strip()
    if len(line) > MAX_NODE_MESSAGE:
        line = line[: MAX_NODE_MESSAGE - 1].rstrip() + "…"
    return line or "the node failed"


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(Refused)
    async def on_refused(request: Request, exc: Refused) -> JSONResponse:
        return await on_api_error(request, refusal(exc))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if first.get("type") == "json_invalid":
            message = "request body is not valid JSON"
        else:
            message = f"{where or 'body'}: {first.get('msg', 'invalid value')}"
        return JSONResponse(oa.error_body(400, message, "invalid_request", where or None), 400)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Keep the exception's headers: a 405 must say which methods are allowed.
        return JSONResponse(
            oa.error_body(exc.status_code, str(exc.detail)), exc.status_code, headers=exc.headers
        )


class BodyLimit(HttpMiddleware):
    """Refuses request bodies over ``limit`` bytes with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        super().__init__(app)
        self.limit = limit

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _send_json(send, 413, oa.error_body(413, f"request body over {self.limit} bytes"))
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ApiError(413, f"request body over {self.limit} bytes")
            return message

        await self.app(scope, limited, send)


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
