"""The base of the gateway's own ASGI middleware."""

from __future__ import annotations

import trio
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HttpMiddleware:
    """Wraps an ASGI app and sees its HTTP requests (``http``); lifespan and websocket
    events pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class StatusSeen:
    """A ``send`` that passes messages on and remembers the response's status (0 until the
    response starts)."""

    def __init__(self, send: Send) -> None:
        self.status = 0
        self._send = send

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        await self._send(message)

    def failed(self, exc: BaseException) -> None:
        """What the client got when ``exc`` ended the request before a response started:
        the server's 500, or nothing (499) if it left."""
        if not self.status:
            self.status = 499 if isinstance(exc, trio.Cancelled) else 500
