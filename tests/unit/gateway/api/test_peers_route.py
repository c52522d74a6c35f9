"""``GET /v1/peers``: where peers listen is shown to admins only; the terminal tools read
either answer."""

from __future__ import annotations

from typing import Any

from rich.console import Console

import keys
from gateway.api.app import create_app
from gateway.api.auth import Authenticator
from gateway.api.services import Services
from gateway.client.peer_view import render
from protocols.peers import PeerStatus
from tests.unit.gateway.api.test_http import KEY, FakeBackend, http
from tests.unit.gateway.client.test_peer_view import status

PEERS = [status("12D3KooWgateway1", role="gateway").to_json(), status("12D3KooWnode0001").to_json()]


def app() -> Any:
    services = Services(backend=FakeBackend(), auth=Authenticator(KEY.public_key()))
    services.peers = lambda: [dict(p) for p in PEERS]
    return create_app(services)


async def listed(scope: str) -> list[dict[str, Any]]:
    token = keys.issue(KEY, "ann", 600, scope)
    async with http(app()) as client:
        response = await client.get("/v1/peers", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def test_users_see_every_peer_but_not_where_it_listens() -> None:
    for scope in ("inference", "session"):
        data = await listed(scope)
        assert [p["addrs"] for p in data] == [[], []]
        assert data == [p | {"addrs": []} for p in PEERS]


async def test_admins_see_the_addresses() -> None:
    assert await listed("admin") == PEERS


async def test_the_peers_table_reads_either_answer() -> None:
    for scope, address in (("inference", "- "), ("admin", "10.0.0.1:4001")):
        console = Console(record=True, width=200, color_system=None)
        console.print(render([PeerStatus.from_json(p) for p in await listed(scope)]))
        assert address in console.export_text()
