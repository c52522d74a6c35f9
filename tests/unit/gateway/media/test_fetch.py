"""The fetcher of pictures named by URL reaches only public hosts: every refusal here is
decided before any connection is made (tests/integration/test_picture_fetch.py fetches
from a real server)."""

from __future__ import annotations

import pytest

from gateway.media import BadMedia
from gateway.media.fetch import fetch_picture, resolve_public

NOT_PUBLIC = [
    "127.0.0.1",
    "localhost",
    "10.1.2.3",
    "172.16.0.9",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata services
    "100.64.0.1",  # shared address space (carrier NAT)
    "0.0.0.0",
    "224.0.0.1",
    "::1",
    "fe80::1",
    "fd00::1",
    "::ffff:127.0.0.1",  # IPv4 loopback, written as IPv6
    "::ffff:10.0.0.1",
]


@pytest.mark.parametrize("host", NOT_PUBLIC)
async def test_a_host_that_is_not_public_is_refused(host: str) -> None:
    with pytest.raises(BadMedia, match="not a public address"):
        await resolve_public(host, 80)


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254", "[::1]", "localhost"])
async def test_fetching_from_such_a_host_is_refused_before_connecting(host: str) -> None:
    with pytest.raises(BadMedia, match="not a public address"):
        await fetch_picture(f"http://{host}:9/latest/meta-data", 1000, 5.0)


async def test_public_addresses_pass() -> None:
    assert await resolve_public("8.8.8.8", 443) == ["8.8.8.8"]
    assert await resolve_public("2001:4860:4860::8888", 443) == ["2001:4860:4860::8888"]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://8.8.8.8/x.png", "data URL, or http"),
        ("file:///etc/passwd", "data URL, or http"),
        ("http:///x.png", "data URL, or http"),
        ("http://user:secret@8.8.8.8/x.png", "user name or password"),
        ("http://8.8.8.8:99999/x.png", "bad port"),
    ],
)
async def test_urls_that_are_not_plain_web_addresses_are_refused(url: str, why: str) -> None:
    with pytest.raises(BadMedia, match=why):
        await fetch_picture(url, 1000, 5.0)
