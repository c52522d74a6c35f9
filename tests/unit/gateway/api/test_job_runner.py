"""The job runner against a scripted API in process and a real SQLite file: what each way a
call can end makes of its job, the order jobs run in, the caller they run as, and webhooks
to a real server (reached only at public addresses)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from starlette.types import Receive, Scope, Send

import keys
from gateway.accounts.database import Store
from gateway.accounts.jobs import Job, JobStore
from gateway.accounts.webhooks import SIGNATURE_HEADER, verify
from gateway.api.auth import ON_BEHALF
from gateway.api.job_runner import Jobs, Webhooks
from gateway.media.fetch import resolve_public
from tests.conftest import served


class Scripted:
    """An API whose answers depend on the job's model: ``ok``; ``flaky`` (a 502, then ok);
    ``broken`` (always 502); ``bad`` (a 400); ``limited`` (a 429 with Retry-After 1, then
    ok); ``slow`` (answers after 30 s)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.order: list[str] = []
        self.callers: list[keys.Claims] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = json.loads((await receive())["body"])
        model = body["model"]
        self.calls[model] += 1
        self.order.append(body["messages"][0]["content"])
        self.callers.append(scope[ON_BEHALF])
        status, answer, headers = 200, {"answered": model}, [(b"x-bitinglip-node", b"peer-1")]
        first = self.calls[model] == 1
        if model == "slow":
            await trio.sleep(30)
        elif model == "broken" or (model == "flaky" and first):
            status, answer = 502, {"error": {"message": "node lost", "code": "unavailable"}}
        elif model == "bad":
            status, answer = 400, {"error": {"message": "no", "code": "invalid_request"}}
        elif model == "limited" and first:
            status, answer = 429, {"error": {"message": "slow", "code": "rate_limit_exceeded"}}
            headers.append((b"retry-after", b"1"))
        raw = json.dumps(answer).encode()
        headers.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})


CLAIMS = keys.Claims("alice", "key-1", "inference", 2e9)


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[tuple[Jobs, Scripted]]:
    with Store.open(tmp_path) as store:
        jobs = Jobs(JobStore(store), owner="gw", running=1, keep_for=60)
        api = Scripted()
        jobs.app = api
        async with trio.open_nursery() as nursery:
            await nursery.start(jobs.run)
            yield jobs, api
            nursery.cancel_scope.cancel()


async def submit(jobs: Jobs, model: str, content: str = "hi", priority: int = 0) -> Job:
    request = {"model": model, "messages": [{"role": "user", "content": content}]}
    job = await jobs.db.call(
        jobs.store.submit, CLAIMS, "chat", model, request, priority, None, "http://gw", 100
    )
    jobs.wake()
    return job


async def ended(jobs: Jobs, job: Job) -> Job:
    with trio.fail_after(10):
        while True:
            found = await jobs.db.call(jobs.store.get, job.id)
            assert found is not None
            if found.state in ("done", "failed", "cancelled"):
                return found
            await trio.sleep(0.02)


async def test_an_answer_is_kept_with_its_node_and_the_call_ran_as_the_submitter(
    runner: tuple[Jobs, Scripted],
) -> None:
    jobs, api = runner
    done = await ended(jobs, await submit(jobs, "ok"))
    assert (done.state, done.status, done.result, done.node) == (
        "done",
        200,
        {"answered": "ok"},
        "peer-1",
    )
    # The submitter, with the job's submission as the token's issue time for account checks.
    assert api.callers == [dataclasses.replace(CLAIMS, iat=done.created)]


async def test_a_failed_node_gets_one_more_try(runner: tuple[Jobs, Scripted]) -> None:
    jobs, api = runner
    states: list[str] = []
    jobs.on_end.append(states.append)
    flaky = await ended(jobs, await submit(jobs, "flaky"))
    assert (flaky.state, flaky.attempts) == ("done", 2)
    broken = await ended(jobs, await submit(jobs, "broken"))
    assert (broken.state, broken.status, broken.attempts) == ("failed", 502, 2)
    assert broken.error == {"message": "node lost", "code": "unavailable"}
    assert api.calls["broken"] == 2
    assert states == ["done", "failed"]  # the retries are not endings


async def test_a_bad_request_fails_at_once(runner: tuple[Jobs, Scripted]) -> None:
    jobs, api = runner
    bad = await ended(jobs, await submit(jobs, "bad"))
    assert (bad.state, bad.status, api.calls["bad"]) == ("failed", 400, 1)


async def test_a_rate_limit_makes_the_job_wait_without_using_a_try(
    runner: tuple[Jobs, Scripted],
) -> None:
    jobs, api = runner
    before = trio.current_time()
    limited = await ended(jobs, await submit(jobs, "limited"))
    assert (limited.state, limited.attempts, api.calls["limited"]) == ("done", 1, 2)
    assert trio.current_time() - before >= 1  # its Retry-After


async def test_jobs_run_by_priority_then_age_and_a_running_one_is_cancelled(
    runner: tuple[Jobs, Scripted],
) -> None:
    jobs, api = runner
    slow = await submit(jobs, "slow", "first")  # holds the one slot
    with trio.fail_after(5):
        while not api.order:
            await trio.sleep(0.01)
    low = await submit(jobs, "ok", "low")
    old = await submit(jobs, "ok", "old", priority=3)
    new = await submit(jobs, "ok", "new", priority=3)
    assert await jobs.db.call(jobs.store.position, low) == 2
    cancelled = await jobs.db.call(jobs.store.cancel, slow.id, "alice", 60)
    assert cancelled is not None
    jobs.cancel_running(slow.id)
    for job in (low, old, new):
        await ended(jobs, job)
    assert api.order == ["first", "old", "new", "low"]
    still = await jobs.db.call(jobs.store.get, slow.id)
    assert still is not None and still.state == "cancelled"


async def test_webhooks_go_only_to_public_addresses_signed(tmp_path: Path) -> None:
    received: list[tuple[bytes, dict[bytes, bytes]]] = []

    async def receiver(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        received.append(((await receive())["body"], dict(scope["headers"])))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def hooks_test(host: str, port: int) -> list[str]:
        """``hooks.test`` stands for a public host; anything else is checked as it is."""
        return ["127.0.0.1"] if host == "hooks.test" else await resolve_public(host, port)

    with Store.open(tmp_path) as store:
        jobs = Jobs(JobStore(store), owner="gw", webhooks=Webhooks(hooks_test, timeout=5))
        jobs.app = Scripted()
        async with served(receiver) as url, trio.open_nursery() as nursery:
            await nursery.start(jobs.run)
            request = {"model": "ok", "messages": [{"role": "user", "content": "hi"}]}
            port = url.rsplit(":", 1)[1]
            for hook in (f"http://127.0.0.1:{port}/h", f"http://hooks.test:{port}/h"):
                job = await jobs.db.call(
                    jobs.store.submit, CLAIMS, "chat", "ok", request, 0, hook, "http://gw", 9
                )
                jobs.wake()
                await ended(jobs, job)
            with trio.fail_after(5):
                while not received:
                    await trio.sleep(0.02)
            await trio.sleep(0.2)  # the first job's webhook had its chance too
            nursery.cancel_scope.cancel()
        secret = jobs.store.webhook_secret("alice")
    assert len(received) == 1  # the loopback address by number was refused
    body, headers = received[0]
    verify(secret, body, headers[SIGNATURE_HEADER.lower().encode()].decode(), time.time())
    assert headers[b"host"] == f"hooks.test:{port}".encode()
    assert json.loads(body)["id"] == job.id and json.loads(body)["state"] == "done"
