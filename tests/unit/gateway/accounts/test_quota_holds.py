"""Daily quotas under calls at once: each call's budget is held back at admission and
settled when it ends, so concurrent calls cannot overshoot a quota together, and no budget
stays held after a call fails, is cancelled, or the gateway restarts."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from gateway.accounts.errors import LimitReached
from gateway.accounts.limits import Limiter
from gateway.accounts.metering import Outcome
from tests.unit.gateway.accounts.test_accounts import gateway
from tests.unit.gateway.accounts.test_limits import (
    TOKENS_PER_CHAT,
    Clock,
    HeldBackend,
    claims,
    plans,
    post_chat,
)
from tests.unit.gateway.api.test_http import assert_error


async def test_calls_at_once_near_the_quota_cannot_overshoot_it(tmp_path: Path) -> None:
    backend = HeldBackend()
    limits = plans(tokens_per_day=1000, concurrent=10)
    async with gateway(tmp_path, limits, backend=backend, clock=Clock()) as g:
        auth = g.operator_token("alice")
        answers: list[httpx.Response] = []

        async def call() -> None:
            answers.append(await post_chat(g, auth, max_tokens=300))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(call)
            # Every call is admitted and held at the node, or refused.
            await trio.testing.wait_all_tasks_blocked()
            backend.release.set()
        status = g.limiter.status("alice")
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 200, 200, 429, 429]  # three budgets of ~326 fit in 1000
    refused = next(a for a in answers if a.status_code == 429)
    message = assert_error(refused, 429, "rate_limit_error", "insufficient_quota")
    assert "besides what your calls in flight may use" in message
    assert refused.headers["retry-after"] == "1"  # the calls in flight settle soon
    assert (status["tokens_today"], status["tokens_held"]) == (3 * TOKENS_PER_CHAT, 0)


async def test_a_failed_call_holds_nothing_back(tmp_path: Path) -> None:
    async with gateway(tmp_path, plans(tokens_per_day=1000), clock=Clock()) as g:
        auth = g.operator_token("alice")
        assert (await post_chat(g, auth, model="flaky", max_tokens=900)).status_code == 502
        assert (await post_chat(g, auth, model="busy", max_tokens=900)).status_code == 503
        assert (await post_chat(g, auth, max_tokens=900)).status_code == 200
        assert g.limiter.status("alice")["tokens_held"] == 0


async def test_a_cancelled_call_holds_nothing_back(tmp_path: Path) -> None:
    backend = HeldBackend()
    async with gateway(tmp_path, plans(tokens_per_day=1000), backend=backend, clock=Clock()) as g:
        auth = g.operator_token("alice")
        with trio.move_on_after(60) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(post_chat, g, auth)
                await backend.entered.wait()
                assert g.limiter.status("alice")["tokens_held"] > 256
                scope.cancel()  # the client goes away while the node holds the call
        assert scope.cancelled_caught
        assert g.limiter.status("alice")["tokens_held"] == 0


async def test_a_restart_holds_nothing_back_and_keeps_what_was_used(tmp_path: Path) -> None:
    clock = Clock()
    async with gateway(tmp_path, plans(tokens_per_day=1000), clock=clock) as g:
        auth = g.operator_token("alice")
        assert (await post_chat(g, auth, max_tokens=100)).status_code == 200
        # A call admitted but never recorded: the gateway dies with it in flight.
        await g.limiter.admit(claims(), Outcome("alice", "j", "echo", "chat", budget_tokens=900))
        assert g.limiter.status("alice")["tokens_held"] == 900
        restarted = Limiter(plans(tokens_per_day=1000).get, clock)
        await restarted.load(g.store)
    status = restarted.status("alice")
    assert (status["tokens_today"], status["tokens_held"]) == (TOKENS_PER_CHAT, 0)


async def test_images_asked_for_at_once_are_held_back_too() -> None:
    lim = Limiter(plans(images_per_day=3).get, Clock())
    first = Outcome("alice", "j", "sd", "image", budget_images=2)
    await lim.admit(claims(), first)
    with pytest.raises(LimitReached, match="besides what your calls in flight may use"):
        await lim.admit(claims(), Outcome("alice", "j", "sd", "image", budget_images=2))
    first.images = 1  # the node made fewer than asked
    await lim.record(claims(), first)
    await lim.admit(claims(), Outcome("alice", "j", "sd", "image", budget_images=2))
    with pytest.raises(LimitReached, match="has 2 left; this call may use 3"):
        await lim.admit(claims(), Outcome("alice", "j", "sd", "image", budget_images=3))
