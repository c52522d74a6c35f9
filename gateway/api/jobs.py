"""``/v1/jobs``: submit an inference call to run later, follow it, list, cancel; and
``GET /v1/auth/webhook-secret``, the key that signs a user's webhooks.

The rules (states, the queue, what is kept) are in ``gateway.accounts.jobs``, the running in
``gateway.api.job_runner``; this module only speaks HTTP. A user sees only their own jobs:
anyone else's answer 404, as a job that does not exist does.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from gateway.accounts.jobs import MAX_PAGE, Job
from gateway.api import openai_api as oa
from gateway.api.auth import User
from gateway.api.bodies import json_body, parse, validated
from gateway.api.errors import ApiError
from gateway.api.images import ImageGenerationRequest
from gateway.api.job_runner import Jobs
from gateway.api.services import Services, services

# The body each kind's synchronous route takes.
BODIES: dict[str, type[BaseModel]] = {
    "chat": oa.ChatCompletionRequest,
    "completion": oa.CompletionRequest,
    "image": ImageGenerationRequest,
}


class JobRequest(BaseModel):
    kind: Literal["chat", "completion", "image"] = Field(
        description="the route the job stands for: chat, completion or image"
    )
    request: dict[str, Any] = Field(
        description="the body that route takes (POST /v1/chat/completions, /v1/completions,"
        " /v1/images/generations); not streamed"
    )
    priority: int = Field(
        default=0, ge=0, description="higher runs sooner; at most the plan's job_priority"
    )
    webhook: str | None = Field(
        default=None, max_length=2048, description="http(s) URL POSTed the job when it ends"
    )


def _jobs(s: Services) -> Jobs:
    if s.jobs is None:
        raise ApiError(503, "this gateway takes no jobs", "jobs_disabled")
    return s.jobs


def _checked(s: Services, user: str, body: JobRequest) -> str:
    """The job's model, once its body is one its route takes and the rest is allowed."""
    call = validated(BODIES[body.kind], body.request, ("request",))
    if getattr(call, "stream", False):
        raise ApiError(400, "a job's answer is kept whole: leave stream out", "invalid_request")
    plan = s.plan_of(user)
    if body.priority > plan.job_priority:
        raise ApiError(
            400,
            f"priority is at most {plan.job_priority} on plan {plan.name!r}",
            "invalid_request",
            "priority",
        )
    if body.webhook is not None:
        if _jobs(s).webhooks is None:
            raise ApiError(400, "this gateway calls no webhooks", "invalid_request", "webhook")
        parts = urlsplit(body.webhook)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiError(400, "a webhook is an http(s) URL", "invalid_request", "webhook")
    return str(getattr(call, "model", ""))


async def _own(s: Services, job_id: str, user: str) -> Job:
    jobs = _jobs(s)
    job = await jobs.db.call(jobs.store.get, job_id)
    if job is None or job.user.casefold() != user.casefold():
        raise ApiError(404, f"no job {job_id!r} (finished jobs expire)", "not_found")
    return job


def install(app: FastAPI) -> None:
    @app.post("/v1/jobs", status_code=202, openapi_extra=json_body(app, JobRequest))
    async def submit(request: Request, claims: User) -> JSONResponse:
        s = services(request)
        jobs = _jobs(s)
        body = await parse(request, JobRequest, any_type=True)  # behind a token
        model = _checked(s, claims.sub, body)
        kept = s.plan_of(claims.sub).jobs_kept
        base = str(request.base_url).rstrip("/")
        job = await jobs.db.call(
            jobs.store.submit,
            claims,
            body.kind,
            model,
            body.request,
            body.priority,
            body.webhook,
            base,
            kept,
        )
        jobs.wake()
        return JSONResponse(await jobs.view(job), status_code=202)

    @app.get("/v1/jobs")
    async def list_jobs(
        request: Request,
        claims: User,
        limit: int = Query(default=20, ge=1, le=MAX_PAGE),
        before: str | None = Query(default=None, max_length=64),
    ) -> dict[str, Any]:
        """The caller's jobs, newest first; ``before`` (a job id) pages on."""
        s = services(request)
        jobs = _jobs(s)
        if before is not None:
            try:
                await _own(s, before, claims.sub)
            except ApiError as exc:
                raise ApiError(400, str(exc), "invalid_request", "before") from exc
        found = await jobs.db.call(jobs.store.page, claims.sub, limit + 1, before)
        shown = [await jobs.view(job) for job in found[:limit]]
        more = len(found) > limit
        return {
            "object": "list",
            "data": shown,
            "has_more": more,
            "next": shown[-1]["id"] if more else None,
        }

    @app.get("/v1/jobs/{job_id}")
    async def get_job(request: Request, job_id: str, claims: User) -> dict[str, Any]:
        s = services(request)
        return await _jobs(s).view(await _own(s, job_id, claims.sub))

    @app.delete("/v1/jobs/{job_id}")
    async def cancel_job(request: Request, job_id: str, claims: User) -> dict[str, Any]:
        """Cancel a job that has not ended (on its node too, if it runs); one that ended
        is a 409."""
        s = services(request)
        jobs = _jobs(s)
        job = await _own(s, job_id, claims.sub)
        if job.state in ("done", "failed"):
            raise ApiError(409, f"the job already ended: {job.state}", "job_ended")
        cancelled = await jobs.db.call(jobs.store.cancel, job_id, claims.sub, jobs.keep_for)
        jobs.cancel_running(job_id)
        jobs.wake()  # another gateway running it sees the cancel within a second
        if cancelled is None:  # deleted (expired) in between
            raise ApiError(404, f"no job {job_id!r} (finished jobs expire)", "not_found")
        if job.state != "cancelled":
            s.metrics.jobs_ended.labels("cancelled").inc()
        return await jobs.view(cancelled)

    @app.get("/v1/auth/webhook-secret")
    async def webhook_secret(request: Request, claims: User) -> dict[str, Any]:
        """The secret that signs the caller's webhooks (``X-BitingLip-Signature``)."""
        jobs = _jobs(services(request))
        secret = await jobs.db.call(jobs.store.webhook_secret, claims.sub)
        return {"secret": secret, "header": "X-BitingLip-Signature", "scheme": "t=<unix>,v1=<hex>"}
