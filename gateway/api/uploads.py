"""Uploads take larger bodies than the rest of the API: a dispatcher by path.

Audio files are uploaded whole, up to the gateway's ``max_upload_bytes``; every other
route, chats with pictures included, keeps ``max_body_bytes``.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

MEDIA_PATHS = ("/v1/audio/transcriptions", "/v1/audio/translations")


class ByPath:
    """Hands each HTTP request to the app its path names, anything else to ``default``."""

    def __init__(self, default: ASGIApp, paths: Mapping[str, ASGIApp]) -> None:
        self.default = default
        self.paths = dict(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chosen = self.default
        if scope["type"] == "http":
            chosen = self.paths.get(scope.get("path", ""), self.default)
        await chosen(scope, receive, send)
