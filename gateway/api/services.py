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

from gateway.accounts.database import Store
from gateway.accounts.limits import Limiter, Plan
from gateway.accounts.metering import Meter
from gateway.accounts.users import Accounts
from gateway.api.auth import Authenticator
from gateway.api.image_store import ImageStore
from gateway.api.job_runner import Jobs
from gateway.api.metrics import GatewayMetrics
from gateway.api.response_cache import ResponseCache
from gateway.media import MediaLimits
from gateway.routing.dispatch import Ticket, Wait
from gateway.routing.router import Drawing, Embeddings, Generation, Heard, Images, Speech
from protocols import (
    EmbedParams,
    GenerateParams,
    ImageParams,
    SpeechParams,
    TranscribeParams,
    VisionParams,
)


class Backend(Protocol):
    """What the HTTP layer needs from the swarm side (a ``Router`` in production)."""

    def generate(
        self, params: GenerateParams, timeout: float, ticket: Ticket | None = None
    ) -> AbstractAsyncContextManager[Generation]: ...

    def serving(self) -> dict[str, list[dict[str, Any]]]:
        """Model id → the peers that list it, with their state."""
        ...


class ImageBackend(Protocol):
    """Image generation on the swarm side (a ``Router`` in production)."""

    async def generate_image(
        self, params: ImageParams, timeout: float, wait: Wait | None = None
    ) -> Images: ...

    def draw(
        self, params: ImageParams, timeout: float, wait: Wait | None = None
    ) -> AbstractAsyncContextManager[Drawing]:
        """The call opened on a node, to follow step by step."""
        ...


class MediaBackend(Protocol):
    """Speech and pictures on the swarm side (a ``Router`` in production)."""

    def speak(
        self, params: SpeechParams, timeout: float, wait: Wait | None = None
    ) -> AbstractAsyncContextManager[Speech]: ...

    async def transcribe(
        self, params: TranscribeParams, timeout: float, wait: Wait | None = None
    ) -> Heard: ...

    def describe(
        self, params: VisionParams, timeout: float, ticket: Ticket | None = None
    ) -> AbstractAsyncContextManager[Generation]: ...


class EmbeddingBackend(Protocol):
    """Embeddings on the swarm side (a ``Router`` in production)."""

    async def embed(
        self, params: EmbedParams, timeout: float, wait: Wait | None = None
    ) -> Embeddings: ...


class Queue(Protocol):
    """Where text calls wait for a busy model (a ``Router`` in production)."""

    max_wait: float  # the longest a call may wait, and the default

    async def ask(self, model: str, task: str, wait: Wait) -> Ticket: ...

    async def wait_turn(self, ticket: Ticket, timeout: float) -> bool: ...

    def where(self, ticket: Ticket) -> tuple[int, float]: ...

    def cancel(self, ticket: Ticket) -> None: ...


@dataclass
class Services:
    backend: Backend
    auth: Authenticator
    peer_id: str = ""
    request_timeout: float = 300.0
    health: Callable[[], dict[str, Any]] = field(default=dict)
    meters: list[Meter] = field(default_factory=list)
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    # Every peer this gateway knows, itself included, as ``GET /v1/peers`` lists them.
    peers: Callable[[], list[dict[str, Any]]] = field(default=list)
    # None: this gateway answers no image generation.
    image_backend: ImageBackend | None = None
    # Where images asked for as URLs are kept; None: only inline (b64_json) answers.
    image_store: ImageStore | None = None
    # None: this gateway answers no speech and reads no pictures.
    media: MediaBackend | None = None
    media_limits: MediaLimits = field(default_factory=MediaLimits)
    # None: this gateway answers no embeddings.
    embeddings: EmbeddingBackend | None = None
    # Users, keys, plans and usage; None: no accounts (operator-issued tokens only).
    store: Store | None = None
    accounts: Accounts | None = None
    limiter: Limiter | None = None
    # None: calls are not queued here (they go to a node, or fail, at once).
    queue: Queue | None = None
    # Deterministic text answers kept in memory; None: every call goes to a node.
    cache: ResponseCache | None = None
    cache_shared: bool = False  # whether users are answered from each other's calls
    # A model's build as the nodes advertise it: part of every cache key.
    revision: Callable[[str], str] = field(default=lambda model: "")
    # Jobs: queued calls answered later; None: this gateway takes no jobs.
    jobs: Jobs | None = None

    def plan_of(self, user: str) -> Plan:
        """``user``'s plan; the built-in default where this gateway keeps no accounts."""
        return self.accounts.plan_of(user) if self.accounts is not None else Plan()


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found
