"""The jobs table: the queue's order, claims, retries, cancels, recovery, expiry, bounds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import keys
from gateway.accounts.database import Store
from gateway.accounts.errors import Refused
from gateway.accounts.jobs import Job, JobStore

BODY = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CLOCK = Clock()


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[JobStore]:
    CLOCK.now = 1000.0
    with Store.open(tmp_path) as store:
        yield JobStore(store, CLOCK)


def claims(user: str = "alice") -> keys.Claims:
    return keys.Claims(user, f"key-{user}", "inference", 2e9)


def submit(jobs: JobStore, priority: int = 0, user: str = "alice", kept: int = 100) -> Job:
    CLOCK.now += 1  # each job a second younger than the one before
    return jobs.submit(claims(user), "chat", "echo", BODY, priority, None, "http://gw", kept)


def test_jobs_are_claimed_by_priority_then_age(jobs: JobStore) -> None:
    old, urgent, young = submit(jobs), submit(jobs, priority=5), submit(jobs)
    assert (jobs.position(old), jobs.position(urgent), jobs.position(young)) == (1, 0, 2)
    order = [jobs.claim("gw-1") for _ in range(4)]
    assert [j.id if j else None for j in order] == [urgent.id, old.id, young.id, None]
    running = order[0]
    assert running is not None
    assert (running.state, running.owner, running.attempts) == ("running", "gw-1", 1)
    # The submitter's token, issued (for the account checks) when the job was submitted.
    assert running.claims == replace(claims(), iat=urgent.created)
    assert running.request == BODY


def test_a_finished_job_keeps_its_result_until_it_expires(jobs: JobStore) -> None:
    submit(jobs)
    job = jobs.claim("gw")
    assert job is not None
    assert jobs.finish(job, "done", 200, result={"answer": 1}, node="peer", keep_for=60)
    done = jobs.get(job.id)
    assert done is not None
    assert (done.state, done.result, done.node, done.expires_at) == (
        "done",
        {"answer": 1},
        "peer",
        CLOCK.now + 60,
    )
    assert not jobs.finish(job, "failed", 500, keep_for=60)  # it ended: no second ending
    assert jobs.expire() == 0
    CLOCK.now += 61
    assert jobs.expire() == 1 and jobs.get(job.id) is None


def test_a_requeued_job_waits_and_a_refunded_try_does_not_count(jobs: JobStore) -> None:
    submit(jobs)
    job = jobs.claim("gw")
    assert job is not None
    assert jobs.requeue(job, after=5, refund=True)
    assert jobs.claim("gw") is None  # not before 5 s
    CLOCK.now += 5
    again = jobs.claim("gw")
    assert again is not None and again.attempts == 1


def test_a_cancelled_job_stays_cancelled(jobs: JobStore) -> None:
    queued, running = submit(jobs), submit(jobs, priority=1)
    claimed = jobs.claim("gw")
    assert claimed is not None and claimed.id == running.id
    assert jobs.cancel(running.id, "bob", 60) is None  # not bob's
    assert jobs.cancelled([running.id, queued.id]) == {queued.id}  # queued is not running
    cancelled = jobs.cancel(running.id, "ALICE", 60)
    assert cancelled is not None and cancelled.state == "cancelled"
    assert cancelled.error == {"message": "the job was cancelled", "code": "cancelled"}
    assert jobs.cancelled([running.id]) == {running.id}
    assert not jobs.finish(claimed, "done", 200, result={}, keep_for=60)
    assert not jobs.requeue(claimed)
    got = jobs.get(running.id)
    assert got is not None and got.state == "cancelled"


def test_a_restart_queues_running_jobs_once_then_fails_them(jobs: JobStore) -> None:
    first, other = submit(jobs), submit(jobs)
    assert jobs.claim("gw-1") is not None
    assert jobs.claim("gw-2") is not None  # another gateway's: left alone
    assert jobs.recover("gw-1", 60) == (1, 0)
    again = jobs.claim("gw-1")
    assert again is not None and again.id == first.id and again.attempts == 2
    assert jobs.recover("gw-1", 60) == (0, 1)
    failed = jobs.get(first.id)
    assert failed is not None and failed.state == "failed" and failed.status == 503
    assert failed.error is not None and failed.error["code"] == "interrupted"
    still = jobs.get(other.id)
    assert still is not None and still.state == "running"


def test_jobs_are_bounded_per_user(jobs: JobStore) -> None:
    kept = [submit(jobs, kept=2), submit(jobs, kept=2)]
    with pytest.raises(Refused, match="2 jobs waiting or running") as refused:
        submit(jobs, kept=2)
    assert refused.value.status_hint == 429
    submit(jobs, user="bob", kept=2)  # the bound is each user's
    for _ in kept:
        job = jobs.claim("gw")
        assert job is not None and jobs.finish(job, "done", 200, result={}, keep_for=60)
    # Finished jobs make room, oldest first.
    newest = submit(jobs, kept=2)
    assert [j.id for j in jobs.page("alice", 10)] == [newest.id, kept[1].id]


def test_pages_run_newest_first_and_only_over_ones_own_jobs(jobs: JobStore) -> None:
    mine = [submit(jobs) for _ in range(5)]
    theirs = submit(jobs, user="bob")
    first = jobs.page("alice", 2)
    assert [j.id for j in first] == [mine[4].id, mine[3].id]
    rest = jobs.page("alice", 10, before=first[-1].id)
    assert [j.id for j in rest] == [mine[2].id, mine[1].id, mine[0].id]
    assert jobs.page("alice", 10, before=theirs.id) == jobs.page("alice", 10)


def test_bad_kinds_are_refused_and_each_user_has_one_webhook_secret(jobs: JobStore) -> None:
    with pytest.raises(Refused, match="kind must be one of"):
        jobs.submit(claims(), "speech", "m", {}, 0, None, "http://gw", 10)
    secret = jobs.webhook_secret("alice")
    assert secret.startswith("whsec_") and jobs.webhook_secret("ALICE") == secret
    assert jobs.webhook_secret("bob") != secret
