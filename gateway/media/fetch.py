"""Fetching a picture that a caller names by an http(s) URL, where the operator allows it
(and, with ``send_pinned``, any request the gateway makes to a URL a caller gave: webhooks).

A caller's URL makes the gateway open a connection on the caller's behalf, so only public
hosts are reached: the name is resolved first, every address it has must be a global one
(no loopback, private, link-local, shared or reserved address: no cloud metadata service,
no service on the gateway's own network), and the connection goes to the address that was
checked, so a name that resolves differently a moment later changes nothing. TLS still
verifies the certificate against the name. Redirects are followed a few times, each
checked the same way. The body is read up to a byte limit, the whole fetch within a time
limit.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urljoin, urlsplit

import httpx
import trio

from gateway.media.errors import BadMedia

MAX_REDIRECTS = 3
# Resolves a host and port to the addresses a connection may use.
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_any(host: str, port: int) -> list[str]:
    """Every address ``host`` has, public or not (for hosts the operator trusts)."""
    try:
        found = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise BadMedia(f"the host {host} cannot be found") from exc
    return sorted({str(info[4][0]) for info in found})


async def resolve_public(host: str, port: int) -> list[str]:
    """Every address ``host`` has; ``BadMedia`` unless all of them are public."""
    addresses = await resolve_any(host, port)
    if not addresses or not all(_public(a) for a in addresses):
        raise BadMedia(f"the host {host} is not a public address")
    return addresses


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def fetch_picture(
    url: str, max_bytes: int, timeout: float, resolve: Resolver = resolve_public
) -> bytes:
    """The body at ``url`` (http or https), at most ``max_bytes``, within ``timeout``
    seconds; ``BadMedia`` with the reason for anything else."""
    with trio.move_on_after(timeout):
        async with httpx.AsyncClient(follow_redirects=False, timeout=timeout) as client:
            for _ in range(MAX_REDIRECTS + 1):
                response = await _get(client, url, max_bytes, resolve)
                if isinstance(response, bytes):
                    return response
                url = response
            raise BadMedia(f"the picture's URL redirects more than {MAX_REDIRECTS} times")
    # Only the deadline leaves the block without returning or raising.
    raise BadMedia(f"fetching the picture took longer than {timeout:g} s")


async def _get(
    client: httpx.AsyncClient, url: str, max_bytes: int, resolve: Resolver
) -> bytes | str:
    """The body at ``url``, or where it redirects to."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadMedia("a picture's URL must be a data URL, or http(s) where the gateway fetches")
    headers = {"Accept": "image/*", "Accept-Encoding": "identity"}
    response = await send_pinned(client, "GET", url, resolve, headers=headers)
    try:
        return await _body(response, url, max_bytes)
    finally:
        await response.aclose()


async def send_pinned(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    resolve: Resolver,
    *,
    headers: dict[str, str],
    content: bytes | None = None,
) -> httpx.Response:
    """Send ``method`` to ``url`` (http or https) at the address ``resolve`` checked, with the
    response's body still to read; ``BadMedia`` with the reason for a URL it will not reach.
    (Identity encoding: a size limit counts the bytes as they will be decoded.)"""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadMedia("the URL must be http(s) with a host name")
    if parts.username or parts.password:
        raise BadMedia("the URL must not carry a user name or password")
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise BadMedia("the URL has a bad port") from exc
    address = (await resolve(host, port))[0]
    literal = f"[{address}]" if ":" in address else address
    pinned = parts._replace(netloc=f"{literal}:{port}").geturl()
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    try:
        request = client.build_request(
            method,
            pinned,
            headers={"Host": parts.netloc} | headers,
            content=content,
            extensions=extensions,
        )
        return await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise BadMedia(f"{url} cannot be reached: {exc}") from exc


async def _body(response: httpx.Response, url: str, max_bytes: int) -> bytes | str:
    if response.is_redirect and "location" in response.headers:
        return urljoin(url, response.headers["location"])
    if response.status_code != 200:
        raise BadMedia(f"fetching the picture was answered {response.status_code}")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise BadMedia(f"a picture is larger than {max_bytes} bytes")
    body = bytearray()
    try:
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > max_bytes:
                raise BadMedia(f"a picture is larger than {max_bytes} bytes")
    except httpx.HTTPError as exc:
        raise BadMedia(f"the picture cannot be fetched: {exc}") from exc
    return bytes(body)
