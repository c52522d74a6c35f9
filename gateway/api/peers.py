"""``GET /v1/peers``: every peer this gateway knows, itself included, with live load.

Where peers listen is for the operator: an admin token sees ``addrs``, any other token an
empty list, so a user cannot map the swarm's hosts to reach them around the gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request

from gateway.api.auth import User
from gateway.api.services import services
from gateway.routing.peer_table import PeerEntry, PeerTable
from node.p2p.version import VERSION
from protocols.peers import PeerStatus, sort_key


def install(app: FastAPI) -> None:
    @app.get("/v1/peers")
    async def list_peers(request: Request, claims: User) -> dict[str, Any]:
        peers = services(request).peers()
        if claims.scope != "admin":
            peers = [peer | {"addrs": []} for peer in peers]
        return {"object": "list", "data": peers}


# Whether this gateway reaches a peer through a relay only (``NatTraversal.relayed``).
Relayed = Callable[[str], bool | None]


def node_status(entry: PeerEntry, now: float, relayed: Relayed | None = None) -> PeerStatus:
    connected = entry.connected
    return PeerStatus.from_record(
        entry.record,
        entry.load if connected else None,
        now - entry.last_seen,
        healthy=not entry.suspect(now),
        rtt_ms=round(entry.rtt * 1000, 2) if connected else None,
        relayed=relayed(entry.record.peer_id) if connected and relayed is not None else None,
    )


def snapshot(
    table: PeerTable, peer_id: str, addrs: list[str], now: float, relayed: Relayed | None = None
) -> list[dict[str, Any]]:
    """This gateway and the nodes in its table, as ``/v1/peers`` lists them."""
    gateway = PeerStatus(
        peer_id=peer_id,
        role="gateway",
        addrs=addrs,
        version=VERSION,
        hardware=None,
        models=[],
        load=None,
        last_seen=0.0,
        healthy=True,
    )
    nodes = [node_status(e, now, relayed) for e in table.entries.values()]
    return [p.to_json() for p in sorted([gateway, *nodes], key=sort_key)]
