"""Registering and logging in under attack: cross-site posts. In-process, on a real SQLite
file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.gateway.accounts.test_accounts import Gateway, gateway
from tests.unit.gateway.api.test_http import assert_error


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with gateway(tmp_path) as g:
        yield g


# --- cross-site posts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data", None],
)
@pytest.mark.parametrize("route", ["/v1/auth/register", "/v1/auth/login"])
async def test_a_json_body_without_a_json_type_is_415(
    gw: Gateway, route: str, content_type: str | None
) -> None:
    # What a page elsewhere can post from a user's browser without asking: a form, or
    # text/plain whose body happens to be JSON.
    headers = {"Content-Type": content_type} if content_type else {}
    body = b'{"username": "alice", "password": "correct horse battery"}'
    response = await gw.client.post(route, content=body, headers=headers)
    message = assert_error(response, 415, "invalid_request_error", "unsupported_media_type")
    assert "application/json" in message
    assert gw.store.users() == []


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/x+json"]
)
async def test_json_types_are_read(gw: Gateway, content_type: str) -> None:
    body = b'{"username": "alice", "password": "correct horse battery"}'
    response = await gw.client.post(
        "/v1/auth/register", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 201, response.text
