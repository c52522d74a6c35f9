"""The gateway's HTTP API: an ASGI app, OpenAI-compatible, authenticated with JWTs.

Each area of the API is a module with ``install(app)``; this module only composes them.
"""

from __future__ import annotations

from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp

from gateway.api import (
    accounts,
    admin,
    audio,
    chat,
    completions,
    dashboard,
    embeddings,
    images,
    jobs,
    metrics,
    openapi,
    peers,
    settings,
    usage,
)
from gateway.api.errors import BodyLimit, install_error_handlers
from gateway.api.lean import LeanRoutes
from gateway.api.request_ids import RequestIds
from gateway.api.services import Services
from gateway.api.uploads import MEDIA_PATHS, ByPath

# The API's areas, in the order their routes are matched.
AREAS = [
    chat,
    completions,
    embeddings,
    jobs,
    peers,
    metrics,
    dashboard,
    images,
    audio,
    accounts,
    settings,
    admin,
    usage,
    openapi,
]


def create_app(
    services: Services,
    *,
    max_body_bytes: int = 1 << 20,
    max_upload_bytes: int = 25 << 20,
    metrics_route: bool = True,
) -> ASGIApp:
    """The API; ``metrics_route`` False leaves ``/metrics`` to a listener of its own
    (``metrics.metrics_app``)."""
    # The interactive docs ship their Swagger UI and ReDoc assets: no CDN, works offline.
    app = FastAPIOffline(
        title="BitingLip Swarm gateway", version="1", docs_url="/docs", redoc_url="/redoc"
    )
    app.state.services = services
    app.state.metrics_route = metrics_route
    install_error_handlers(app)
    for area in AREAS:
        area.install(app)
    # The calls served most skip FastAPI's routing and middleware (same handlers, same checks).
    lean = LeanRoutes(
        app,
        {"/v1/chat/completions": chat.chat_completions, "/v1/completions": completions.completions},
    )
    # Audio uploads take larger bodies than the rest.
    larger = BodyLimit(app, max(max_body_bytes, max_upload_bytes))
    # Outermost: a refusal for size, too, names its request.
    return RequestIds(ByPath(BodyLimit(lean, max_body_bytes), dict.fromkeys(MEDIA_PATHS, larger)))
