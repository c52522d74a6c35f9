"""Durable usage: every inference call is written to the store before its response ends,
and ``GET /v1/usage`` / ``GET /v1/admin/usage`` sum it up per day and model.

Writes are group-committed: calls that end while a write is on its way to disk go out
together in the next transaction, so one flush covers many calls under load, and each
call still returns only once its own row is on disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import trio
from fastapi import FastAPI, Query, Request

import keys
from gateway.accounts.database import Store, UsageRecord, UsageTotal
from gateway.accounts.limits import utc_day
from gateway.accounts.metering import Outcome
from gateway.api.auth import Admin, User
from gateway.api.errors import ApiError
from gateway.api.services import services

logger = logging.getLogger(__name__)

DAY = 86400.0

# Told of each call written here, so it can be counted elsewhere too.
UsageHook = Callable[[UsageRecord], None]


@dataclass
class _Batch:
    records: list[UsageRecord] = field(default_factory=list)
    written: bool = False
    failed: bool = False


class UsageMeter:
    """A ``Meter`` that writes one usage row per call, awaited, before the response ends."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.on_usage: list[UsageHook] = []
        self.written = 0
        self._clock = clock
        self._open = _Batch()
        self._writing = trio.Lock()

    async def admit(self, claims: keys.Claims, outcome: Outcome) -> None:
        return

    def headers(self, claims: keys.Claims) -> dict[str, str]:
        return {}

    async def record(self, claims: keys.Claims, outcome: Outcome) -> None:
        now = self._clock()
        record = UsageRecord(
            ts=now,
            day=utc_day(now),
            user=claims.sub,
            key_id=claims.jti,
            model=outcome.model,
            peer=outcome.peer_id,
            kind=outcome.kind,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            images=outcome.images,
            status=outcome.status,
            latency_ms=round(outcome.latency * 1000),
        )
        if not await self._write(record):
            return
        for hook in self.on_usage:
            try:
                hook(record)
            except Exception:
                logger.exception("usage hook failed")

    async def _write(self, record: UsageRecord) -> bool:
        batch = self._open
        batch.records.append(record)
        async with self._writing:
            if not batch.written:  # nobody took this batch to disk while we waited: we do
                self._open = _Batch()
                try:
                    await self.store.call(self.store.add_usage, batch.records)
                    self.written += len(batch.records)
                except Exception:
                    # The call itself went well: answer it, and say loudly what was lost.
                    logger.exception("could not write %d usage rows", len(batch.records))
                    batch.failed = True
                batch.written = True
        return not batch.failed


def _rows(totals: list[UsageTotal], with_user: bool) -> list[dict[str, Any]]:
    return [
        {"date": t.day, "model": t.model}
        | ({"user": t.user} if with_user else {})
        | {
            "requests": t.requests,
            "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.completion_tokens,
            "images": t.images,
        }
        for t in totals
    ]


def _totals(totals: list[UsageTotal]) -> dict[str, int]:
    return {
        "requests": sum(t.requests for t in totals),
        "prompt_tokens": sum(t.prompt_tokens for t in totals),
        "completion_tokens": sum(t.completion_tokens for t in totals),
        "images": sum(t.images for t in totals),
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
