"""Runs queued jobs: each through this gateway's own HTTP API, as the user who submitted it.

A job's call goes in process to the synchronous route its ``kind`` names (``ROUTES``), with
the submitter's claims in the ASGI scope (``auth.ON_BEHALF``): it is admitted, metered,
routed and charged exactly as the same call over HTTP, and its result is that route's
answer, byte for byte (images as the URLs or base64 the images route gives). At most
``running`` jobs run at once; the next is the queue's highest priority, then its oldest.

How a call ends decides what becomes of its job:

- answered: ``done``, with the answer;
- turned away by a rate or concurrency limit, or with no node that can take it now (or,
  just after the gateway started, none found yet): queued again a little later, the try
  not counted;
- the node failed or went away: queued again, once (the router sends the new try to a node
  that can take it), then ``failed``;
- refused for what it asked (a bad request, a quota used up): ``failed``, with the error;
- cancelled (``DELETE /v1/jobs/{id}``, on this gateway or another sharing the database):
  the call is cancelled, on its node too.

A job that ended calls its webhook, if it has one: a POST of the job as ``GET
/v1/jobs/{id}`` shows it, signed (``gateway.accounts.webhooks``), to the address checked
as a picture's URL is (``gateway.media.fetch``), once, within ``webhook_timeout``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import trio
from starlette.types import ASGIApp, Receive, Scope, Send

import keys
from gateway.accounts.jobs import MAX_ATTEMPTS, Job, JobStore, State
from gateway.accounts.webhooks import SIGNATURE_HEADER, sign
from gateway.api.auth import ON_BEHALF
from gateway.api.openai_api import NODE_HEADER
from gateway.media import BadMedia
from gateway.media.fetch import Resolver, send_pinned

logger = logging.getLogger(__name__)

ROUTES = {
    "chat": "/v1/chat/completions",
    "completion": "/v1/completions",
    "image": "/v1/images/generations",
}
POLL = 1.0  # seconds between looks at the queue (jobs another gateway queued, cancels)
EXPIRE_EVERY = 60.0
# Limits that pass with time: the job waits, its try not counted.
WAIT_CODES = frozenset({"rate_limit_exceeded", "concurrency_limit_exceeded"})
# While no node can take a job's call (all busy, loading, or not found yet), it waits.
NO_PEER_WAIT = 2.0
DISCOVERY_GRACE = 30.0  # seconds after start in which a model not found may still appear
# Calls that may well succeed on another try (another node).
RETRY_STATUSES = frozenset({500, 502, 503, 504})
# Guesses when a job will be done: (model, request, jobs ahead) → seconds, None if unknown.
Eta = Callable[[str, dict[str, Any], int], float | None]


@dataclass(frozen=True)
class Webhooks:
    """Where webhooks may go: ``resolve`` checks (and pins) each address."""

    resolve: Resolver
    timeout: float = 10.0


class Jobs:
    def __init__(
        self,
        store: JobStore,
        *,
        owner: str,
        running: int = 4,
        keep_for: float = 86400.0,
        webhooks: Webhooks | None = None,
        eta: Eta | None = None,
    ) -> None:
        self.store = store
        self.owner = owner  # this gateway's name in the jobs it claims
        self.running = running
        self.keep_for = keep_for
        self.webhooks = webhooks
        self.eta: Eta = eta or (lambda model, request, ahead: None)
        self.app: ASGIApp | None = None  # the API the jobs' calls go through
        self.db = store.store  # its methods run on the database's worker thread
        self._scopes: dict[str, trio.CancelScope] = {}
        self._wake = trio.Event()
        self._began = 0.0
        self._nursery: trio.Nursery | None = None  # where jobs and webhook deliveries run
        self.on_end: list[Callable[[State], None]] = []  # told how each job it ran ended

    def wake(self) -> None:
        """Look at the queue now (a job was submitted or ended)."""
        self._wake.set()

    def cancel_running(self, job_id: str) -> None:
        """Cancel the call of ``job_id`` if it runs here."""
        scope = self._scopes.get(job_id)
        if scope is not None:
            scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take jobs from the queue and run them, for as long as the gateway runs."""
        again, failed = await self.db.call(self.store.recover, self.owner, self.keep_for)
        if again or failed:
            logger.info("jobs left running before: %d queued again, %d failed", again, failed)
        self._began = trio.current_time()
        task_status.started()
        expired_at = 0.0
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            while True:
                while len(self._scopes) < self.running:
                    job = await self.db.call(self.store.claim, self.owner)
                    if job is None:
                        break
                    self._scopes[job.id] = trio.CancelScope()
                    nursery.start_soon(self._run_one, job)
                with trio.move_on_after(POLL):
                    await self._wake.wait()
                self._wake = trio.Event()
                for job_id in await self.db.call(self.store.cancelled, list(self._scopes)):
                    self.cancel_running(job_id)
                if time.monotonic() - expired_at > EXPIRE_EVERY:
                    expired_at = time.monotonic()
                    await self.db.call(self.store.expire)

    async def _run_one(self, job: Job) -> None:
        scope = self._scopes[job.id]
        try:
            with scope:
                status, body, headers = await self._dispatch(job)
            if scope.cancelled_caught:
                self._ended(job)
                return
            await self._settle(job, status, body, headers)
        except Exception:
            logger.exception("job %s could not be run", job.id)
            with trio.CancelScope(shield=True):
                error = {"message": "the gateway failed to run the job", "code": "internal"}
                await self._end(job, "failed", 500, None, error, None)
        finally:
            del self._scopes[job.id]
            self.wake()

    async def _dispatch(self, job: Job) -> tuple[int, dict[str, Any], httpx.Headers]:
        """The job's call, through the API in process, as its submitter."""
        assert self.app is not None, "Jobs.app is set before Jobs.run"
        transport = httpx.ASGITransport(app=_on_behalf(self.app, job.claims))
        async with httpx.AsyncClient(
            transport=transport, base_url=job.base_url, timeout=None
        ) as client:
            response = await client.post(ROUTES[job.kind], json=job.request)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {"error": {"message": "the call gave no answer", "code": "internal"}}
        return response.status_code, body, response.headers

    async def _settle(
        self, job: Job, status: int, body: dict[str, Any], headers: httpx.Headers
    ) -> None:
        node = headers.get(NODE_HEADER)
        if status < 400:
            await self._end(job, "done", status, body, None, node)
            return
        error = body.get("error")
        if not isinstance(error, dict):
            error = {}
        wait = self._wait(status, error.get("code"), headers)
        if wait is not None:
            await self.db.call(self._requeue, job, wait, True)
            return
        if status in RETRY_STATUSES and job.attempts < MAX_ATTEMPTS:
            logger.info("job %s: try %d failed (%s), trying again", job.id, job.attempts, status)
            await self.db.call(self._requeue, job, 0.0, False)
            return
        await self._end(job, "failed", status, None, error, node)

    def _wait(self, status: int, code: object, headers: httpx.Headers) -> float | None:
        """Seconds to wait before trying again a call turned away before it began, the
        try not counted; None for a call that ran, or will not run however long it waits."""
        if status == 429 and code in WAIT_CODES:
            return _seconds(headers.get("retry-after"))
        if status == 503 and code == "no_peer_ready":
            return NO_PEER_WAIT
        # Just started, the gateway may not know every node yet.
        if code == "model_not_found" and trio.current_time() - self._began < DISCOVERY_GRACE:
            return NO_PEER_WAIT
        return None

    async def _end(
        self,
        job: Job,
        state: State,
        status: int,
        result: dict[str, Any] | None,
        error: dict[str, Any] | None,
        node: str | None,
    ) -> None:
        """End a running job (unless it was cancelled meanwhile), then tell whoever hears."""
        ended = await self.db.call(
            partial(
                self.store.finish,
                job,
                state,
                status,
                result=result,
                error=error,
                node=node,
                keep_for=self.keep_for,
            )
        )
        if ended:
            for hook in self.on_end:
                hook(state)
        self._ended(job)

    def _requeue(self, job: Job, after: float, refund: bool) -> bool:
        return self.store.requeue(job, after=after, refund=refund)

    async def view(self, job: Job) -> dict[str, Any]:
        """A job as ``GET /v1/jobs/{id}`` shows it."""
        shown: dict[str, Any] = {
            "id": job.id,
            "object": "job",
            "kind": job.kind,
            "model": job.model,
            "state": job.state,
            "priority": job.priority,
            "created": int(job.created),
            "started": _stamp(job.started),
            "finished": _stamp(job.finished),
            "attempts": job.attempts,
            "webhook": job.webhook,
        }
        if job.state == "queued":
            ahead = await self.db.call(self.store.position, job)
            shown["position"] = ahead
            shown["eta_seconds"] = self.eta(job.model, job.request, ahead)
        elif job.state == "running":
            shown["eta_seconds"] = self.eta(job.model, job.request, 0)
        if job.expires_at is not None:
            shown["expires_at"] = int(job.expires_at)
        if job.result is not None:
            shown["result"] = job.result
        if job.error is not None:
            shown["error"] = job.error | {"status": job.status}
        return shown

    def _ended(self, job: Job) -> None:
        """Call the webhook of a job that ended, apart: its slot is free for the next job."""
        if self.webhooks is not None and job.webhook is not None and self._nursery is not None:
            self._nursery.start_soon(self._deliver, job, job.webhook, self.webhooks)

    async def _deliver(self, job: Job, url: str, hooks: Webhooks) -> None:
        """POST the job as it is now (it may have been cancelled) to ``url``, signed."""
        ended = await self.db.call(self.store.get, job.id)
        if ended is None:
            return
        body = json.dumps(await self.view(ended)).encode()
        secret = await self.db.call(self.store.webhook_secret, ended.user)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body, time.time()),
            "User-Agent": "BitingLip-Webhook/1",
        }
        with trio.move_on_after(hooks.timeout) as deadline:
            try:
                async with httpx.AsyncClient(timeout=hooks.timeout) as client:
                    response = await send_pinned(
                        client, "POST", url, hooks.resolve, headers=headers, content=body
                    )
                    await response.aclose()
                logger.info("job %s: webhook answered %d", job.id, response.status_code)
            except (BadMedia, httpx.HTTPError) as exc:
                logger.warning("job %s: webhook not delivered: %s", job.id, exc)
        if deadline.cancelled_caught:
            logger.warning("job %s: webhook took longer than %g s", job.id, hooks.timeout)


def _on_behalf(app: ASGIApp, claims: keys.Claims) -> ASGIApp:
    async def as_user(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, ON_BEHALF: claims}, receive, send)

    return as_user


def _seconds(value: str | None) -> float:
    try:
        return max(1.0, min(float(value or 1), 3600.0))
    except ValueError:
        return 1.0


def _stamp(at: float | None) -> int | None:
    return int(at) if at is not None else None
