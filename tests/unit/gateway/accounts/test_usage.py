"""Usage is written before the answer completes, and survives the gateway being killed.

These in-process tests check what each row holds and what the usage routes report, and that
a streamed answer ends only after its row is written (over a real socket); the SIGKILL test
with real processes is tests/integration/test_usage_durable.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import keys
from gateway.accounts.database import Store, UsageRecord
from gateway.accounts.metering import Outcome
from gateway.accounts.usage import UsageMeter
from tests.conftest import served
from tests.unit.gateway.accounts.test_accounts import Gateway, bearer, gateway
from tests.unit.gateway.api.test_http import PEER, assert_error, chat


@pytest.fixture
async def gw(tmp_path: Path) -> Any:
    async with gateway(tmp_path) as g:
        yield g


# --- what a row holds ---------------------------------------------------------------------


async def test_each_call_writes_one_row(gw: Gateway) -> None:
    auth = gw.operator_token("alice")
    jti = gw.claims(auth["Authorization"].split()[1]).jti
    seen: list[UsageRecord] = []
    gw.usage.on_usage.append(seen.append)
    post = gw.client.post
    assert (await post("/v1/chat/completions", json=chat(), headers=auth)).status_code == 200
    streamed = await post("/v1/chat/completions", json=chat("long", stream=True), headers=auth)
    assert streamed.status_code == 200
    assert (await post("/v1/chat/completions", json=chat("flaky"), headers=auth)).status_code == 502
    assert (await post("/v1/chat/completions", json=chat("gpt-9"), headers=auth)).status_code == 404

    records = await gw.store.call(gw.store.usage_records)
    assert [(r.model, r.status, r.prompt_tokens, r.completion_tokens) for r in records] == [
        ("echo", 200, 17, 3),
        ("long", 200, 17, 3),
        ("flaky", 502, 0, 0),
        ("gpt-9", 404, 0, 0),
    ]
    first = records[0]
    assert (first.user, first.key_id, first.peer, first.kind) == ("alice", jti, PEER, "chat")
    assert first.ts == pytest.approx(time.time(), abs=5)
    assert first.day == time.strftime("%Y-%m-%d", time.gmtime(first.ts))
    assert 0 <= first.latency_ms < 5000
    assert records[-1].peer == ""  # never reached a node
    assert seen == records  # and each was announced once written


async def test_rows_are_written_before_the_answer(gw: Gateway) -> None:
    written: list[int] = []
    original = gw.store.add_usage

    def slow_add(records: list[UsageRecord]) -> None:
        time.sleep(0.05)  # a slow disk: the answer must still wait for it
        original(records)
        written.append(len(records))

    gw.store.add_usage = slow_add  # type: ignore[method-assign]
    auth = gw.operator_token("alice")
    response = await gw.client.post("/v1/chat/completions", json=chat(), headers=auth)
    assert response.status_code == 200
    assert written == [1]


async def test_a_streamed_answer_ends_only_after_its_row_is_written(gw: Gateway) -> None:
    # Over a real server and socket: an in-process transport could not show which of the
    # row and the end of the stream came first.
    writing, release = threading.Event(), threading.Event()
    original = gw.store.add_usage

    def held(records: list[UsageRecord]) -> None:
        writing.set()
        release.wait(30)  # a disk that answers when the test says so
        original(records)

    gw.store.add_usage = held  # type: ignore[method-assign]
    body = chat(stream=True) | {"stream_options": {"include_usage": True}}
    async with served(gw.app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        request = client.build_request(
            "POST", "/v1/chat/completions", json=body, headers=gw.operator_token("alice")
        )
        response = await client.send(request, stream=True)
        assert response.status_code == 200
        seen: list[str] = []

        async def read() -> None:
            async for line in response.aiter_lines():
                seen.append(line)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            with trio.fail_after(30):
                while not writing.is_set():
                    await trio.sleep(0.01)
            # The write has begun and is held: whatever the server sends now came first.
            await trio.sleep(0.5)
            assert "data: [DONE]" not in seen
            release.set()
            with trio.fail_after(30):
                while "data: [DONE]" not in seen:
                    await trio.sleep(0.01)
        await response.aclose()
    events = [line for line in seen if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert '"usage"' in events[-2]  # the closing chunk with usage, also after the write
    assert len(await gw.store.call(gw.store.usage_records)) == 1


async def test_calls_ending_together_share_one_write(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        batches: list[int] = []
        original = store.add_usage

        def counted(records: list[UsageRecord]) -> None:
            time.sleep(0.02)
            original(records)
            batches.append(len(records))

        store.add_usage = counted  # type: ignore[method-assign]
        meter = UsageMeter(store)
        claims = keys.Claims("alice", "k", "inference", time.time() + 60)
        async with trio.open_nursery() as nursery:
            for i in range(40):
                outcome = Outcome("alice", "k", "echo", "chat", completion_tokens=i)
                nursery.start_soon(meter.record, claims, outcome)
        assert sum(batches) == 40 == meter.written
        assert len(batches) < 10
        tokens = sorted(r.completion_tokens for r in store.usage_records())
        assert tokens == list(range(40))


async def test_a_failed_write_does_not_fail_the_call(gw: Gateway) -> None:
    def broken(records: list[UsageRecord]) -> None:
        raise OSError("disk full")

    gw.store.add_usage = broken  # type: ignore[method-assign]
    seen: list[UsageRecord] = []
    gw.usage.on_usage.append(seen.append)
    auth = gw.operator_token("alice")
    response = await gw.client.post("/v1/chat/completions", json=chat(), headers=auth)
    assert response.status_code == 200
    assert seen == []  # nothing was written, so nothing is announced


# --- the usage routes ---------------------------------------------------------------------


async def test_own_usage(gw: Gateway) -> None:
    alice, bob = gw.operator_token("alice"), gw.operator_token("bob")
    for model, who in (("echo", alice), ("echo", alice), ("long", alice), ("echo", bob)):
        await gw.client.post("/v1/chat/completions", json=chat(model), headers=who)
    response = await gw.client.get("/v1/usage", headers=alice)
    assert response.status_code == 200
    body = response.json()
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert body["object"] == "list"
    assert body["data"] == [
        {"date": today, "model": "echo"} | used(2, 34, 6),
        {"date": today, "model": "long"} | used(1, 17, 3),
    ]
    assert body["totals"] == used(3, 51, 9)
    assert body["limits"] == {
        "name": "default",
        "requests_per_minute": 60,
        "tokens_per_day": 200_000,
        "images_per_day": 100,
        "concurrent": 4,
        "max_choices": 4,
        "audio_seconds_per_day": 3600,
        "priority": 1,
        "job_priority": 10,
        "jobs_kept": 100,
        "response_cache": 1,
        "cache_hit_percent": 0,
        "requests_this_minute": 3,
        "tokens_today": 60,
        "images_today": 0,
        "audio_seconds_today": 0,
        "inflight": 0,
        "tokens_held": 0,
        "images_held": 0,
        "audio_seconds_held": 0,
    }


def used(requests: int, prompt: int, completion: int) -> dict[str, int]:
    return {
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "images": 0,
        "audio_seconds": 0,
    }


async def test_usage_days_are_checked(gw: Gateway) -> None:
    auth = gw.operator_token("alice")
    for days in ("0", "367", "many"):
        response = await gw.client.get(f"/v1/usage?days={days}", headers=auth)
        assert_error(response, 400, "invalid_request_error", "invalid_request")
    old = UsageRecord(
        time.time() - 40 * 86400, "2000-01-01", "alice", "k", "echo", "", "chat", 1, 1, 0, 200, 1
    )
    await gw.store.call(gw.store.add_usage, [old])
    assert (await gw.client.get("/v1/usage", headers=auth)).json()["data"] == []
    response = await gw.client.get("/v1/usage?days=1", headers=auth)
    assert response.json()["totals"]["requests"] == 0


async def test_admin_usage(gw: Gateway) -> None:
    for user in ("alice", "bob", "bob"):
        await gw.client.post("/v1/chat/completions", json=chat(), headers=gw.operator_token(user))
    admin = gw.operator_token("root", "admin")
    body = (await gw.client.get("/v1/admin/usage", headers=admin)).json()
    assert [(r["user"], r["model"], r["requests"]) for r in body["data"]] == [
        ("alice", "echo", 1),
        ("bob", "echo", 2),
    ]
    assert body["totals"]["requests"] == 3
    only_bob = (await gw.client.get("/v1/admin/usage?user=bob", headers=admin)).json()
    assert [r["user"] for r in only_bob["data"]] == ["bob"]
    for token in (gw.operator_token("alice"), gw.operator_token("alice", "session")):
        response = await gw.client.get("/v1/admin/usage", headers=token)
        assert "admin" in assert_error(response, 403, "permission_error", "insufficient_scope")


async def test_usage_needs_a_token(gw: Gateway) -> None:
    assert (await gw.client.get("/v1/usage")).status_code == 401
    assert (await gw.client.get("/v1/usage", headers=bearer("not.a.jwt"))).status_code == 401
