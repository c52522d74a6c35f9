"""The inference routes without FastAPI's machinery around them.

A chat or text completion is the call a gateway serves most, and on it FastAPI's
middleware stack, route matching over every route and dependency solving cost about as
much as the gateway's own work. This layer serves ``POST`` on those paths itself with the
same handlers and the same checks (the bearer token, the body's size and shape, the
errors' bodies, the HTTP metrics); anything else, and these paths' other methods, go on
to the app, whose routes still describe them in the API's documentation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

import keys
from gateway.accounts.errors import Refused
from gateway.api import openai_api as oa
from gateway.api.asgi import HttpMiddleware, StatusSeen
from gateway.api.auth import require_user
from gateway.api.errors import ApiError, error_response, refusal

logger = logging.getLogger(__name__)

Handler = Callable[[Request, keys.Claims], Awaitable[Response]]


class LeanRoutes(HttpMiddleware):
    def __init__(self, app: FastAPI, routes: Mapping[str, Handler]) -> None:
        super().__init__(app)
        self.api = app
        self.routes = dict(routes)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.routes.get(scope["path"]) if scope["method"] == "POST" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        scope["app"] = self.api  # what ``request.app`` (the services) reads
        started = time.monotonic()
        sending = StatusSeen(send)
        try:
            response = await _answer(handler, Request(scope, receive))
            await response(scope, receive, sending)
        except Exception:
            # As the app's own server-error layer does: the client gets a 500, the log
            # the traceback; the gateway keeps serving.
            logger.exception("%s failed", scope["path"])
            if not sending.status:
                failed = JSONResponse(oa.error_body(500, "internal error"), status_code=500)
                await failed(scope, receive, sending)
        except BaseException as exc:
            sending.failed(exc)
            raise
        finally:
            metrics = self.api.state.services.metrics
            metrics.http_done(scope["path"], "POST", sending.status, time.monotonic() - started)


async def _answer(handler: Handler, request: Request) -> Response:
    """The handler's response, or the error response the app would have made of what it
    raised (``gateway.api.errors.install_error_handlers``)."""
    try:
        return await handler(request, await require_user(request))
    except Refused as exc:
        failure = refusal(exc)
    except ApiError as exc:
        failure = exc
    return error_response(failure)
