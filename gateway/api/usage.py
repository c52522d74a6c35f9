"""``GET /v1/usage`` and ``GET /v1/admin/usage``: usage summed up per day and model, or for
the operator by user, model, day, or model and day, of everyone or of one user."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request

from gateway.accounts.database import Store, UsageSum, UsageTotal
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


def _totals(totals: Sequence[UsageTotal | UsageSum]) -> dict[str, int]:
    return {
        "requests": sum(t.requests for t in totals),
        "prompt_tokens": sum(t.prompt_tokens for t in totals),
        "completion_tokens": sum(t.completion_tokens for t in totals),
        "images": sum(t.images for t in totals),
        "audio_seconds": sum(t.audio_seconds for t in totals),
    }


def _store(request: Request) -> Store:
    store = services(request).store
    if store is None:
        raise ApiError(503, "usage is not recorded on this gateway", "usage_disabled")
    return store


def _since(days: int) -> str:
    return utc_day(time.time() - (days - 1) * DAY)


async def _usage(request: Request, days: int, user: str | None) -> list[UsageTotal]:
    store = _store(request)
    return await store.call(store.usage, _since(days), user)


def _sums(sums: list[UsageSum], by: str) -> list[dict[str, Any]]:
    names = by.split(",")
    return [
        dict(zip(names, s.key, strict=True))
        | {
            "requests": s.requests,
            "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens,
            "images": s.images,
            "audio_seconds": s.audio_seconds,
        }
        for s in sums
    ]


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
        request: Request,
        claims: Admin,
        days: Days = 30,
        user: str | None = None,
        by: Annotated[
            Literal["user", "model", "date", "date,model"] | None,
            Query(description="sum by this alone: one row per user, model, day, or model and day"),
        ] = None,
    ) -> dict[str, Any]:
        if by is None:
            totals = await _usage(request, days, user)
            data = _rows(totals, with_user=True)
            return {"object": "list", "data": data, "totals": _totals(totals)}
        store = _store(request)
        sums = await store.call(store.usage_by, _since(days), by, user)
        return {"object": "list", "data": _sums(sums, by), "totals": _totals(sums)}
