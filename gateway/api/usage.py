"""``GET /v1/usage`` and ``GET /v1/admin/usage``: usage summed up per day and model."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request

from gateway.accounts.database import UsageTotal
from gateway.accounts.limits import utc_day
from gateway.api.auth import Admin, User
from gateway.api.errors import ApiError
from gateway.api.services import services

DAY = 86400.0


def _rows(totals: list[UsageTotal], with_user: bool) -> list[dict[str, Any]]:
    return [
        {"date": t.day, "model": t.model}
        | ({"user": t.user} if with_user else {})
        | {
            "requests": t.requests,
            "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.completion_tokens,
            "images": t.images,
            "audio_seconds": t.audio_seconds,
        }
        for t in totals
    ]


def _totals(totals: list[UsageTotal]) -> dict[str, int]:
    return {
        "requests": sum(t.requests for t in totals),
        "prompt_tokens": sum(t.prompt_tokens for t in totals),
        "completion_tokens": sum(t.completion_tokens for t in totals),
        "images": sum(t.images for t in totals),
        "audio_seconds": sum(t.audio_seconds for t in totals),
    }


async def _usage(request: Request, days: int, user: str | None) -> list[UsageTotal]:
    store = services(request).store
    if store is None:
        raise ApiError(503, "usage is not recorded on this gateway", "usage_disabled")
    since = utc_day(time.time() - (days - 1) * DAY)
    return await store.call(store.usage, since, user)


Days = Annotated[int, Query(ge=1, le=366, description="how many days back, today included")]


def install(app: FastAPI) -> None:
    @app.get("/v1/usage")
    async def own_usage(request: Request, claims: User, days: Days = 30) -> dict[str, Any]:
        totals = await _usage(request, days, claims.sub)
        limiter = services(request).limiter
        return {
            "object": "list",
            "data": _rows(totals, with_user=False),
            "totals": _totals(totals),
            "limits": limiter.status(claims.sub) if limiter else {},
        }

    @app.get("/v1/admin/usage")
    async def all_usage(
        request: Request, claims: Admin, days: Days = 30, user: str | None = None
    ) -> dict[str, Any]:
        totals = await _usage(request, days, user)
        return {"object": "list", "data": _rows(totals, with_user=True), "totals": _totals(totals)}
