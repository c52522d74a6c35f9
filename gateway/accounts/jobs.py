"""Jobs: inference calls queued in the gateway's database, answered later.

A job is the body of a synchronous call (``kind`` names the route) with a priority and,
optionally, a webhook. It lives in the ``jobs`` table from submission until its result
expires, so a gateway that restarts finds its work: queued jobs wait on, and a job that
was running when the gateway stopped is queued again once (``MAX_ATTEMPTS``), else failed.
Gateways sharing one database take jobs from one queue: a gateway claims a job by moving
it from ``queued`` to ``running`` under its own name (``owner``) in one statement, so no
two run it.

State moves only forward::

    queued ──► running ──► done | failed
       │          │
       └──────────┴──► cancelled          (and running ──► queued: a retry)

Methods block (SQLite); the gateway runs them through ``Store.call``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import keys
from gateway.accounts.database import Store
from gateway.accounts.errors import Refused

State = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED: tuple[State, ...] = ("done", "failed", "cancelled")
# The routes a job may stand for: their bodies are the synchronous routes' bodies.
KINDS = ("chat", "completion", "image")
# A job is tried at most this often: once, and once more if its node or gateway went away.
MAX_ATTEMPTS = 2
MAX_PAGE = 100

_COLUMNS = (
    "id, user, key_id, scope, token_exp, kind, model, request, priority, webhook, base_url,"
    " state, owner, attempts, created, started, finished, expires_at, status, result, error,"
    " node"
)


@dataclass(frozen=True)
class Job:
    id: str
    user: str
    key_id: str
    scope: str
    token_exp: float
    kind: str
    model: str
    request: dict[str, Any]
    priority: int
    webhook: str | None
    base_url: str  # where the job was submitted: image URLs in its result point there
    state: State
    owner: str | None  # the gateway running it
    attempts: int
    created: float
    started: float | None
    finished: float | None
    expires_at: float | None  # the result is deleted then
    status: int | None  # the HTTP status its call ended with
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    node: str | None

    @property
    def claims(self) -> keys.Claims:
        """The submitter's token as it was: the call runs as them, on their plan. Issued, as
        far as the account checks go, when the job was submitted (with a token then valid):
        a job cannot outlive its account, nor run for a new account of the same name."""
        return keys.Claims(self.user, self.key_id, self.scope, self.token_exp, self.created)


def new_job_id() -> str:
    return f"job_{secrets.token_hex(12)}"


def _job(row: Any) -> Job:
    values = list(row)
    values[7] = json.loads(values[7])
    values[19] = json.loads(values[19]) if values[19] is not None else None
    values[20] = json.loads(values[20]) if values[20] is not None else None
    return Job(*values)


class JobStore:
    """The ``jobs`` table of a gateway's database, with the rules above."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock

    def submit(
        self,
        claims: keys.Claims,
        kind: str,
        model: str,
        request: dict[str, Any],
        priority: int,
        webhook: str | None,
        base_url: str,
        kept: int,
    ) -> Job:
        """Queue a job; refused (429) if the user already has ``kept`` jobs unfinished.
        Finished jobs past ``kept`` go, oldest first, to make room."""
        if kind not in KINDS:
            raise Refused(f"kind must be one of {', '.join(KINDS)}", "invalid_request", "kind")
        now = self._clock()
        job_id = new_job_id()
        with self.store.transaction() as db:
            waiting = db.execute(
                "SELECT COUNT(*) FROM jobs WHERE user = ? AND state IN ('queued', 'running')",
                (claims.sub,),
            ).fetchone()[0]
            if waiting >= kept:
                raise Refused(
                    f"you have {waiting} jobs waiting or running, the most your plan keeps",
                    "too_many_jobs",
                    status_hint=429,
                )
            db.execute(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE user = ?"
                " AND state IN ('done', 'failed', 'cancelled')"
                " ORDER BY created DESC LIMIT -1 OFFSET ?)",
                (claims.sub, kept - 1 - waiting),
            )
            db.execute(
                f"INSERT INTO jobs ({_COLUMNS}) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', NULL, 0, ?, NULL, NULL, NULL,"
                " NULL, NULL, NULL, NULL)",
                (
                    job_id,
                    claims.sub,
                    claims.jti,
                    claims.scope,
                    claims.exp,
                    kind,
                    model,
                    json.dumps(request),
                    priority,
                    webhook,
                    base_url,
                    now,
                ),
            )
        found = self.get(job_id)
        assert found is not None  # written in the transaction above
        return found

    def get(self, job_id: str) -> Job | None:
        rows = self.store.query(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def page(self, user: str, limit: int, before: str | None = None) -> list[Job]:
        """The user's jobs, newest first, ``limit`` of them, after the job ``before``."""
        limit = max(1, min(limit, MAX_PAGE))
        where, params = "user = ?", list[object]([user])
        cursor = self.get(before) if before else None
        if cursor is not None and cursor.user.casefold() == user.casefold():
            where += " AND (created < ? OR (created = ? AND id < ?))"
            params += [cursor.created, cursor.created, cursor.id]
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM jobs WHERE {where} ORDER BY created DESC, id DESC LIMIT ?",
            [*params, limit],
        )
        return [_job(row) for row in rows]

    def position(self, job: Job) -> int:
        """How many queued jobs go before ``job`` (0: it is next)."""
        rows = self.store.query(
            "SELECT COUNT(*) FROM jobs WHERE state = 'queued'"
            " AND (priority > ? OR (priority = ? AND (created < ? OR (created = ? AND id < ?))))",
            (job.priority, job.priority, job.created, job.created, job.id),
        )
        return int(rows[0][0])

    def running(self) -> int:
        """Jobs running now, on every gateway sharing this database."""
        return int(self.store.query("SELECT COUNT(*) FROM jobs WHERE state = 'running'")[0][0])

    def claim(self, owner: str) -> Job | None:
        """Take the next job (highest priority, then oldest) to run on gateway ``owner``."""
        with self.store.transaction() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE state = 'queued' AND not_before <= ?"
                " ORDER BY priority DESC, created, id LIMIT 1",
                (self._clock(),),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state = 'running', owner = ?, started = ?,"
                " attempts = attempts + 1 WHERE id = ?",
                (owner, self._clock(), row[0]),
            )
        return self.get(row[0])

    def finish(
        self,
        job: Job,
        state: State,
        status: int,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        node: str | None = None,
        keep_for: float,
    ) -> bool:
        """End a running job; False if it was cancelled meanwhile (it stays cancelled)."""
        now = self._clock()
        return self._running_update(
            job,
            "state = ?, status = ?, result = ?, error = ?, node = ?, finished = ?, expires_at = ?",
            (
                state,
                status,
                json.dumps(result) if result is not None else None,
                json.dumps(error) if error is not None else None,
                node,
                now,
                now + keep_for,
            ),
        )

    def requeue(self, job: Job, *, after: float = 0.0, refund: bool = False) -> bool:
        """Put a running job back in the queue (its age kept), to be tried again no sooner
        than ``after`` seconds from now; ``refund``: this try does not count (the call was
        turned away before it started, by a rate limit)."""
        return self._running_update(
            job,
            "state = 'queued', owner = NULL, started = NULL, not_before = ?,"
            " attempts = attempts - ?",
            (self._clock() + after, int(refund)),
        )

    def _running_update(self, job: Job, sets: str, params: tuple[object, ...]) -> bool:
        with self.store.transaction() as db:
            changed: int = db.execute(
                f"UPDATE jobs SET {sets} WHERE id = ? AND state = 'running' AND owner = ?",
                (*params, job.id, job.owner),
            ).rowcount
        return changed > 0

    def cancel(self, job_id: str, user: str, keep_for: float) -> Job | None:
        """Cancel the user's job if it is not finished; the job as it is now, or None if
        the user has no such job."""
        now = self._clock()
        with self.store.transaction() as db:
            db.execute(
                "UPDATE jobs SET state = 'cancelled', finished = ?, expires_at = ?,"
                " error = ? WHERE id = ? AND user = ? AND state IN ('queued', 'running')",
                (now, now + keep_for, json.dumps(_cancelled()), job_id, user),
            )
        found = self.get(job_id)
        return found if found is not None and found.user.casefold() == user.casefold() else None

    def cancelled(self, job_ids: list[str]) -> set[str]:
        """Those of ``job_ids`` cancelled (or gone) by now."""
        if not job_ids:
            return set()
        marks = ", ".join("?" * len(job_ids))
        rows = self.store.query(
            f"SELECT id FROM jobs WHERE id IN ({marks}) AND state = 'running'", job_ids
        )
        return set(job_ids) - {str(row[0]) for row in rows}

    def recover(self, owner: str, keep_for: float) -> tuple[int, int]:
        """After a restart of gateway ``owner``: its jobs left running are queued again if
        they have an attempt left, else failed. (queued again, failed)."""
        now = self._clock()
        reason = {"message": "the gateway stopped while the job ran, twice", "code": "interrupted"}
        with self.store.transaction() as db:
            again = db.execute(
                "UPDATE jobs SET state = 'queued', owner = NULL, started = NULL"
                " WHERE state = 'running' AND owner = ? AND attempts < ?",
                (owner, MAX_ATTEMPTS),
            ).rowcount
            failed = db.execute(
                "UPDATE jobs SET state = 'failed', status = 503, error = ?, finished = ?,"
                " expires_at = ? WHERE state = 'running' AND owner = ?",
                (json.dumps(reason), now, now + keep_for, owner),
            ).rowcount
        return int(again), int(failed)

    def expire(self) -> int:
        """Delete finished jobs whose results have expired; how many went."""
        with self.store.transaction() as db:
            gone: int = db.execute(
                "DELETE FROM jobs WHERE expires_at IS NOT NULL AND expires_at < ?",
                (self._clock(),),
            ).rowcount
        return gone

    def webhook_secret(self, user: str) -> str:
        """The secret that signs ``user``'s webhooks, made on first use."""
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO webhook_secrets VALUES (?, ?)",
                (user, f"whsec_{secrets.token_urlsafe(32)}"),
            )
        rows = self.store.query("SELECT secret FROM webhook_secrets WHERE user = ?", (user,))
        return str(rows[0][0])


def _cancelled() -> dict[str, Any]:
    return {"message": "the job was cancelled", "code": "cancelled"}
