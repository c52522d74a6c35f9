"""Fetching a picture by URL from a real server on 127.0.0.1.

The server stands in for a public host: the resolver given to the fetcher sends the name
``pictures.test`` to it and checks every other host as the gateway does, so a redirect to
the loopback address by number is refused like any redirect to a private address.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from starlette.types import Receive, Scope, Send

from gateway.media import BadMedia
from gateway.media.fetch import fetch_picture, resolve_public
from tests.conftest import served

PICTURE = b"\x89PNG\r\n\x1a\n" + b"\x00" * 5000
HOST = "pictures.test"


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """``/ok.png``; ``/big.png`` (too large, undeclared); ``/slow.png``; redirects."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    port = scope["server"][1]
    headers = [(b"content-type", b"image/png")]
    body = b""
    status = 200
    if path == "/ok.png":
        host = dict(scope["headers"]).get(b"host", b"")
        body = PICTURE if host == f"{HOST}:{port}".encode() else b"wrong host header"
    elif path == "/big.png":
        body = PICTURE * 10
    elif path == "/slow.png":
        await trio.sleep(1)
    elif path == "/away.png":
        status, headers = 302, [(b"location", b"/ok.png")]
    elif path == "/inside.png":
        status, headers = 302, [(b"location", f"http://127.0.0.1:{port}/ok.png".encode())]
    elif path == "/loop.png":
        status, headers = 302, [(b"location", b"/loop.png")]
    else:
        status = 404
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def resolver(host: str, port: int) -> list[str]:
    return ["127.0.0.1"] if host == HOST else await resolve_public(host, port)


@asynccontextmanager
async def server() -> AsyncIterator[str]:
    async with served(app) as url:
        yield url.replace("127.0.0.1", HOST)


async def test_a_picture_is_fetched_from_the_address_that_was_checked() -> None:
    async with server() as url:
        assert await fetch_picture(f"{url}/ok.png", 10_000, 5.0, resolver) == PICTURE
        assert await fetch_picture(f"{url}/away.png", 10_000, 5.0, resolver) == PICTURE


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/big.png", "larger than 10000 bytes"),
        ("/missing.png", "answered 404"),
        ("/inside.png", "not a public address"),
        ("/loop.png", "redirects more than 3 times"),
        ("/slow.png", "took longer than 0.3 s"),
    ],
)
async def test_fetches_are_refused_with_why(path: str, why: str) -> None:
    async with server() as url:
        with pytest.raises(BadMedia, match=why):
            await fetch_picture(f"{url}{path}", 10_000, 0.3, resolver)
