"""What the HTTP routes reach through ``request.app.state.services``.

Routes take their collaborators from here rather than from globals, so tests build an
app around fakes and the gateway process around the real swarm.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import Request

from gateway.auth import Authenticator
from gateway.metering import Meter
from gateway.router import Generation
from protocols import GenerateParams


class Backend(Protocol):
    """What the HTTP layer needs from the swarm side (a ``Router`` in production)."""

    def generate(
        self, params: GenerateParams, timeout: float
    ) -> AbstractAsyncContextManager[Generation]: ...

    def serving(self) -> dict[str, list[dict[str, Any]]]:
        """Model id → the peers that list it, with their state."""
        ...


@dataclass
class Services:
    backend: Backend
    auth: Authenticator
    peer_id: str = ""
    request_timeout: float = 300.0
    health: Callable[[], dict[str, Any]] = field(default=dict)
    meters: list[Meter] = field(default_factory=list)


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found
