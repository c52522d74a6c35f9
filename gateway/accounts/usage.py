"""Durable usage: every inference call is written to the store before its response ends
(``gateway.api.usage`` sums it up per day and model).

Writes are group-committed: calls that end while a write is on its way to disk go out
together in the next transaction, so one flush covers many calls under load, and each
call still returns only once its own row is on disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

import keys
from gateway.accounts.database import Store, UsageRecord
from gateway.accounts.limits import utc_day
from gateway.accounts.metering import Outcome

logger = logging.getLogger(__name__)

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
            audio_seconds=outcome.audio_seconds,
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
