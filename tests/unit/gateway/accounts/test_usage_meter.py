"""Durable usage: the row written for each call, group commits, what a failed write or a
failing hook does, and the two usage endpoints (in-process app, temporary store)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import keys
from gateway.accounts.database import Store, UsageRecord
from gateway.accounts.limits import Plan, Plans
from gateway.accounts.metering import Outcome
from gateway.accounts.usage import UsageMeter
from gateway.api.app import create_app
from gateway.api.auth import Authenticator
from gateway.api.services import Services
from tests.unit.gateway.accounts.test_accounts import gateway
from tests.unit.gateway.api.test_http import FakeBackend, assert_error

NOW = datetime(2026, 3, 14, 12, 0, tzinfo=UTC).timestamp()
DAY = 86400.0


class FakeStore:
    """Records each batch written; ``gate`` holds writes back, ``fail`` makes them fail."""

    def __init__(self) -> None:
        self.batches: list[list[UsageRecord]] = []
        self.gate: trio.Event | None = None
        self.fail = False

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert fn == self.add_usage
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise OSError("disk full")
        return fn(*args)

    def add_usage(self, records: list[UsageRecord]) -> None:
        self.batches.append(list(records))


def claims(user: str = "ann") -> keys.Claims:
    return keys.Claims(user, f"key-{user}", "inference", NOW + 3600)


def outcome(user: str = "ann", **changes: Any) -> Outcome:
    done = Outcome(user, f"key-{user}", "echo", "chat", started=0.0)
    for name, value in changes.items():
        setattr(done, name, value)
    return done


def meter(store: FakeStore) -> UsageMeter:
    return UsageMeter(cast(Store, store), clock=lambda: NOW)


async def test_each_call_writes_one_row_with_everything_it_did() -> None:
    store = FakeStore()
    usage = meter(store)
    done = outcome(
        peer_id="peer-1",
        model="sd",
        kind="image",
        prompt_tokens=7,
        completion_tokens=11,
        images=2,
        status=201,
        latency=1.2506,
    )
    await usage.record(claims(), done)
    assert store.batches == [
        [
            UsageRecord(
                NOW, "2026-03-14", "ann", "key-ann", "sd", "peer-1", "image", 7, 11, 2, 201, 1251
            )
        ]
    ]
    assert usage.written == 1


async def test_admitting_and_headers_are_no_ops() -> None:
    usage = meter(FakeStore())
    await usage.admit(claims(), outcome())  # never refuses
    assert usage.headers(claims()) == {}


async def test_hooks_hear_of_every_written_row_and_one_failing_hook_harms_no_other(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()
    usage = meter(store)
    heard: list[UsageRecord] = []

    def broken(record: UsageRecord) -> None:
        raise RuntimeError("hook bug")

    usage.on_usage += [broken, heard.append]
    with caplog.at_level(logging.ERROR, logger="gateway.usage"):
        await usage.record(claims(), outcome())
        await usage.record(claims("bob"), outcome("bob"))
    assert [r.user for r in heard] == ["ann", "bob"]
    assert heard == [r for batch in store.batches for r in batch]
    assert caplog.messages == ["usage hook failed", "usage hook failed"]


async def test_a_failed_write_is_logged_answers_the_call_and_tells_no_hook(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()
    store.fail = True
    usage = meter(store)
    heard: list[UsageRecord] = []
    usage.on_usage.append(heard.append)
    with caplog.at_level(logging.ERROR, logger="gateway.usage"):
        await usage.record(claims(), outcome())
    assert heard == []
    assert usage.written == 0
    assert caplog.messages == ["could not write 1 usage rows"]
    store.fail = False
    await usage.record(claims(), outcome())
    assert len(heard) == 1
    assert usage.written == 1


async def test_calls_ending_during_a_write_go_out_together_in_the_next_one() -> None:
    store = FakeStore()
    store.gate = trio.Event()
    usage = meter(store)
    heard: list[str] = []
    usage.on_usage.append(lambda r: heard.append(r.user))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(usage.record, claims("ann"), outcome("ann"))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(usage.record, claims("bob"), outcome("bob"))
        nursery.start_soon(usage.record, claims("cy"), outcome("cy"))
        await trio.testing.wait_all_tasks_blocked()
        assert store.batches == []
        assert heard == []
        store.gate.set()
    assert [sorted(r.user for r in batch) for batch in store.batches] == [["ann"], ["bob", "cy"]]
    assert sorted(heard) == ["ann", "bob", "cy"]
    assert usage.written == 3


async def test_a_failed_group_write_fails_every_call_in_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()
    store.gate = trio.Event()
    usage = meter(store)
    heard: list[str] = []
    usage.on_usage.append(lambda r: heard.append(r.user))
    with caplog.at_level(logging.ERROR, logger="gateway.usage"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(usage.record, claims("ann"), outcome("ann"))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(usage.record, claims("bob"), outcome("bob"))
            nursery.start_soon(usage.record, claims("cy"), outcome("cy"))
            await trio.testing.wait_all_tasks_blocked()
            store.gate.set()
            store.fail = True
    assert heard == []
    assert usage.written == 0
    assert caplog.messages == ["could not write 1 usage rows", "could not write 2 usage rows"]


# --- the endpoints ------------------------------------------------------------------------


def row(at: float, user: str, model: str, prompt: int, completion: int, images: int) -> UsageRecord:
    day = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")
    return UsageRecord(at, day, user, "k", model, "p", "chat", prompt, completion, images, 200, 5)


ROWS = [
    row(NOW, "alice", "echo", 10, 1, 0),
    row(NOW - 60, "alice", "echo", 20, 2, 0),
    row(NOW, "alice", "sd", 0, 0, 3),
    row(NOW - DAY, "alice", "echo", 5, 5, 0),
    row(NOW - 2 * DAY, "alice", "echo", 100, 100, 0),
    row(NOW, "bob", "echo", 1, 1, 0),
]


@pytest.fixture(autouse=True)
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> None:
    frozen = SimpleNamespace(time=lambda: NOW)
    # The meter stamps rows; the usage routes count days back from now.
    monkeypatch.setattr("gateway.accounts.usage.time", frozen)
    monkeypatch.setattr("gateway.api.usage.time", frozen)


async def test_own_usage_by_day_and_model_with_totals_and_limits(tmp_path: Path) -> None:
    plans = Plans({"default": Plan("default", 7, 1000, 9, 2)})
    async with gateway(tmp_path, plans, clock=lambda: NOW) as g:
        await g.store.call(g.store.add_usage, ROWS)
        response = await g.client.get(
            "/v1/usage", params={"days": 2}, headers=g.operator_token("alice")
        )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "object": "list",
        "data": [
            {"date": "2026-03-14", "model": "echo", "requests": 2, "prompt_tokens": 30,
             "completion_tokens": 3, "images": 0, "audio_seconds": 0},
            {"date": "2026-03-14", "model": "sd", "requests": 1, "prompt_tokens": 0,
             "completion_tokens": 0, "images": 3, "audio_seconds": 0},
            {"date": "2026-03-13", "model": "echo", "requests": 1, "prompt_tokens": 5,
             "completion_tokens": 5, "images": 0, "audio_seconds": 0},
        ],
        "totals": {"requests": 4, "prompt_tokens": 35, "completion_tokens": 8, "images": 3,
                   "audio_seconds": 0},
        "limits": {"name": "default", "requests_per_minute": 7, "tokens_per_day": 1000,
                   "images_per_day": 9, "concurrent": 2, "max_choices": 4,
                   "audio_seconds_per_day": 3600, "priority": 1, "job_priority": 10,
                   "jobs_kept": 100, "response_cache": 1,
                   "cache_hit_percent": 0, "requests_this_minute": 0, "tokens_today": 0,
                   "images_today": 0, "audio_seconds_today": 0, "inflight": 0,
                   "tokens_held": 0, "images_held": 0, "audio_seconds_held": 0},
    }  # fmt: skip


@pytest.mark.parametrize(("days", "requests"), [(1, 3), (3, 5), (None, 5)])
async def test_days_counts_back_from_today_included(
    tmp_path: Path, days: int | None, requests: int
) -> None:
    async with gateway(tmp_path, clock=lambda: NOW) as g:
        await g.store.call(g.store.add_usage, ROWS)
        params = {} if days is None else {"days": days}
        response = await g.client.get("/v1/usage", params=params, headers=g.operator_token("alice"))
    assert response.json()["totals"]["requests"] == requests


@pytest.mark.parametrize("days", [0, 367])
async def test_days_outside_one_to_366_are_refused(tmp_path: Path, days: int) -> None:
    async with gateway(tmp_path) as g:
        response = await g.client.get(
            "/v1/usage", params={"days": days}, headers=g.operator_token("alice")
        )
    assert response.status_code in (400, 422)


async def test_admin_usage_lists_every_user_or_one(tmp_path: Path) -> None:
    async with gateway(tmp_path, clock=lambda: NOW) as g:
        await g.store.call(g.store.add_usage, ROWS)
        admin = g.operator_token("root", scope="admin")
        everyone = (await g.client.get("/v1/admin/usage", params={"days": 1}, headers=admin)).json()
        bob = await g.client.get(
            "/v1/admin/usage", params={"days": 1, "user": "bob"}, headers=admin
        )
        refused = await g.client.get("/v1/admin/usage", headers=g.operator_token("alice"))
    assert everyone["object"] == "list"
    assert [(r["user"], r["model"], r["requests"]) for r in everyone["data"]] == [
        ("alice", "echo", 2),
        ("alice", "sd", 1),
        ("bob", "echo", 1),
    ]
    assert everyone["totals"] == {
        "requests": 4,
        "prompt_tokens": 31,
        "completion_tokens": 4,
        "images": 3,
        "audio_seconds": 0,
    }
    assert "limits" not in everyone
    assert bob.json()["data"] == [
        {"date": "2026-03-14", "model": "echo", "user": "bob", "requests": 1,
         "prompt_tokens": 1, "completion_tokens": 1, "images": 0, "audio_seconds": 0}
    ]  # fmt: skip
    assert refused.status_code == 403


async def test_a_gateway_without_a_store_says_usage_is_not_recorded() -> None:
    signer = Ed25519PrivateKey.generate()
    services = Services(
        backend=FakeBackend(), auth=Authenticator(keys.KeySet.of(signer.public_key()), [])
    )
    transport = httpx.ASGITransport(app=create_app(services))
    token = {"Authorization": "Bearer " + keys.issue(signer, "ann", 60)}
    admin = {"Authorization": "Bearer " + keys.issue(signer, "root", 60, scope="admin")}
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        own = await client.get("/v1/usage", headers=token)
        every = await client.get("/v1/admin/usage", headers=admin)
    message = assert_error(own, 503, "server_error", "usage_disabled")
    assert message == "usage is not recorded on this gateway"
    # Without accounts nobody is an admin, whatever a token's scope says.
    assert_error(every, 403, "permission_error", "insufficient_scope")
