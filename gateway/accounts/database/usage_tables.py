"""The usage table: one row per call as billed, and the sums the limiter, the user's and
the operator's views read."""

from __future__ import annotations

from dataclasses import astuple

from gateway.accounts.database.connection import Connection
from gateway.accounts.database.records import (
    USAGE_GROUPS,
    DayTotal,
    UsageRecord,
    UsageSum,
    UsageTotal,
)


class UsageTables(Connection):
    def add_usage(self, records: list[UsageRecord]) -> None:
        """Write ``records`` in one transaction: one flush to disk for all of them."""
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO usage (ts, day, user, key_id, model, peer, kind, prompt_tokens,"
                " completion_tokens, images, status, latency_ms, audio_seconds)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [astuple(r) for r in records],
            )

    def usage(self, since_day: str, user: str | None = None) -> list[UsageTotal]:
        """Calls per day, user and model from ``since_day`` on, newest day first."""
        where, params = "day >= ?", [since_day]
        if user is not None:
            where, params = where + " AND user = ?", [since_day, user]
        rows = self._read(
            "SELECT day, user, model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),"
            f" SUM(images), SUM(audio_seconds) FROM usage WHERE {where}"
            " GROUP BY day, user, model ORDER BY day DESC, user, model",
            params,
        )
        return [UsageTotal(*row) for row in rows]

    def usage_by(self, since_day: str, group: str, user: str | None = None) -> list[UsageSum]:
        """Calls from ``since_day`` on (``user``'s only, if given) summed by ``group`` (a key
        of ``USAGE_GROUPS``), the most tokens first: one row per user, model, day or model
        and day, however many calls there were."""
        columns = USAGE_GROUPS[group]
        names = ", ".join(columns)
        where, params = "day >= ?", [since_day]
        if user is not None:
            where, params = where + " AND user = ?", [since_day, user]
        rows = self._read(
            f"SELECT {names}, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(images),"
            f" SUM(audio_seconds) FROM usage WHERE {where} GROUP BY {names}"
            f" ORDER BY SUM(prompt_tokens + completion_tokens) DESC, COUNT(*) DESC, {names}",
            params,
        )
        n = len(columns)
        return [UsageSum(tuple(row[:n]), *row[n:]) for row in rows]

    def day_totals(self, day: str) -> dict[str, DayTotal]:
        """What each user used on ``day``."""
        rows = self._read(
            "SELECT user, SUM(prompt_tokens + completion_tokens), SUM(images),"
            " SUM(audio_seconds) FROM usage WHERE day = ? GROUP BY user",
            (day,),
        )
        return {str(u): DayTotal(int(t), int(i), int(a)) for u, t, i, a in rows}

    def usage_records(self, user: str | None = None) -> list[UsageRecord]:
        """Every call, oldest first (for audits and tests; ``usage`` sums them)."""
        where, params = ("WHERE user = ?", (user,)) if user is not None else ("", ())
        rows = self._read(
            "SELECT ts, day, user, key_id, model, peer, kind, prompt_tokens, completion_tokens,"
            f" images, status, latency_ms, audio_seconds FROM usage {where} ORDER BY id",
            params,
        )
        return [UsageRecord(*row) for row in rows]
