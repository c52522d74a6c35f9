"""Plans and their enforcement: requests per minute, daily quotas, concurrency, remote usage.

A fake wall clock drives the windows, so nothing here sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import keys
from gateway.accounts.database import UsageRecord
from gateway.accounts.errors import Refused
from gateway.accounts.limits import Limiter, Plan, Plans, seconds_to_midnight, utc_day
from gateway.accounts.metering import Outcome
from gateway.api.errors import ApiError, refusal
from gateway.routing.router import Generation
from protocols import GenerateParams
from tests.unit.gateway.accounts.test_accounts import Gateway, gateway
from tests.unit.gateway.api.test_http import FakeBackend, assert_error, chat

# 23:00 UTC: an hour before the daily quotas start again.
T0 = datetime(2026, 3, 14, 23, 0, tzinfo=UTC).timestamp()
# The echo backend answers chat() with 17 prompt and 3 completion tokens.
TOKENS_PER_CHAT = 20


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def plans(**limits: int) -> Plans:
    return Plans({"default": Plan("default", **limits), "pro": Plan("pro", 1000, 10**9, 100, 50)})


def claims(user: str = "alice") -> keys.Claims:
    return keys.Claims(user, f"jti-{user}", "inference", T0 + 3600)


class HeldBackend(FakeBackend):
    """Holds every call open until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = trio.Event()
        self.release = trio.Event()

    @asynccontextmanager
    async def generate(self, params: GenerateParams, timeout: float) -> AsyncIterator[Generation]:
        async with super().generate(params, timeout) as generation:
            self.entered.set()
            await self.release.wait()
            yield generation


async def post_chat(g: Gateway, headers: dict[str, str], **extra: Any) -> httpx.Response:
    return await g.client.post("/v1/chat/completions", json=chat(**extra), headers=headers)


# --- plans --------------------------------------------------------------------------------


def test_default_plan() -> None:
    assert Plans().get(None) == Plan("default", 60, 200_000, 100, 4)


def test_plans_from_config() -> None:
    found = Plans.from_config(
        {"free": {"requests_per_minute": 5}, "default": {"concurrent": 2}}, "free"
    )
    assert found.names() == ["default", "free"]
    assert found.get(None) == Plan("free", requests_per_minute=5)
    assert found.get("default") == Plan("default", concurrent=2)
    assert found.get("gone") == found.get("free")  # a user's plan removed from the config


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"requests_per_hour": 5}, "unknown settings requests_per_hour"),
        ({"concurrent": 0}, "positive"),
        ({"tokens_per_day": -1}, "positive"),
        ({"images_per_day": 1.5}, "positive"),
        ({"concurrent": True}, "positive"),
        ({"concurrent": "4"}, "positive"),
    ],
)
def test_bad_plans_are_refused(table: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Plans.from_config({"free": table}, "default")


def test_default_plan_must_exist() -> None:
    with pytest.raises(ValueError, match="nope"):
        Plans.from_config({}, "nope")


def test_utc_days() -> None:
    assert utc_day(T0) == "2026-03-14"
    assert utc_day(T0 + 3600) == "2026-03-15"
    assert seconds_to_midnight(T0) == 3600
    assert seconds_to_midnight(T0 + 3600) == 86400


# --- over HTTP ----------------------------------------------------------------------------


async def test_requests_per_minute(tmp_path: Path) -> None:
    clock = Clock()
    async with gateway(tmp_path, plans(requests_per_minute=3), clock=clock) as g:
        auth = g.operator_token("alice")
        remaining = []
        for _ in range(3):
            response = await post_chat(g, auth)
            assert response.status_code == 200, response.text
            assert response.headers["x-ratelimit-limit"] == "3"
            remaining.append(response.headers["x-ratelimit-remaining"])
            clock.now += 10
        assert remaining == ["2", "1", "0"]

        refused = await post_chat(g, auth)
        message = assert_error(refused, 429, "rate_limit_error", "rate_limit_exceeded")
        assert "3 requests per minute" in message
        # The first call leaves the window 60 s after it was made: 30 s from now.
        assert refused.headers["retry-after"] == "30"
        assert refused.headers["x-ratelimit-limit"] == "3"
        assert refused.headers["x-ratelimit-remaining"] == "0"
        assert refused.headers["x-ratelimit-reset"] == "30"
        assert len(g.backend.calls) == 3

        # Another user has a window of their own.
        assert (await post_chat(g, g.operator_token("bob"))).status_code == 200
        clock.now += 30
        response = await post_chat(g, auth)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-remaining"] == "0"


async def test_rate_headers_on_every_inference_response(tmp_path: Path) -> None:
    async with gateway(tmp_path, clock=Clock()) as g:
        auth = g.operator_token("alice")
        for response in (await post_chat(g, auth), await post_chat(g, auth, stream=True)):
            assert response.status_code == 200
            assert response.headers["x-ratelimit-limit"] == "60"
            assert int(response.headers["x-ratelimit-remaining"]) < 60
            assert response.headers["x-ratelimit-reset"] == "60"
            assert response.headers["x-ratelimit-limit-tokens"] == "200000"
            assert response.headers["x-ratelimit-reset-tokens"] == "3600"
        upstream_error = await post_chat(g, auth, model="flaky")
        assert upstream_error.status_code == 502
        assert "x-ratelimit-remaining" in upstream_error.headers


async def test_daily_token_quota(tmp_path: Path) -> None:
    clock = Clock()
    async with gateway(tmp_path, plans(tokens_per_day=1000), clock=clock) as g:
        auth = g.operator_token("alice")
        # Each call may use its max_tokens and its prompt: that much must be left to start.
        asked = post_chat(g, auth, max_tokens=1000)
        too_long = assert_error(await asked, 429, "rate_limit_error", "insufficient_quota")
        assert "1000 tokens on plan 'default' has 1000 left; this call may use" in too_long
        assert "(lower max_tokens)" in too_long
        first = await post_chat(g, auth, max_tokens=480)
        assert first.status_code == 200
        # While it ran, its budget was held back ...
        assert int(first.headers["x-ratelimit-remaining-tokens"]) < 1000 - 480
        # ... and once it ended, it was settled with what it used.
        status = g.limiter.status("alice")
        assert (status["tokens_today"], status["tokens_held"]) == (TOKENS_PER_CHAT, 0)
        assert (await post_chat(g, auth, max_tokens=480)).status_code == 200
        await g.limiter.record(claims(), Outcome("alice", "j", "m", "chat", prompt_tokens=960))
        refused = await post_chat(g, auth, max_tokens=1)
        message = assert_error(refused, 429, "rate_limit_error", "insufficient_quota")
        assert message == "daily quota of 1000 tokens used up on plan 'default'"
        assert refused.headers["retry-after"] == "3600"
        assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
        clock.now += 3600  # a new UTC day
        assert (await post_chat(g, auth, max_tokens=480)).status_code == 200


async def test_concurrency_cap(tmp_path: Path) -> None:
    backend = HeldBackend()
    async with gateway(tmp_path, plans(concurrent=1), backend=backend, clock=Clock()) as g:
        auth = g.operator_token("alice")
        answers: list[httpx.Response] = []

        async def first() -> None:
            answers.append(await post_chat(g, auth))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            await backend.entered.wait()
            refused = await post_chat(g, auth)
            message = assert_error(refused, 429, "rate_limit_error", "concurrency_limit_exceeded")
            assert "1 concurrent" in message
            assert refused.headers["retry-after"] == "1"
            backend.release.set()
        assert answers[0].status_code == 200
        assert (await post_chat(g, auth)).status_code == 200  # the slot is free again


async def test_users_get_their_own_plan(tmp_path: Path) -> None:
    async with gateway(tmp_path, plans(requests_per_minute=1), clock=Clock()) as g:
        session = (await g.register("alice"))["token"]
        await g.store.call(g.store.set_plan, "alice", "pro")
        await g.accounts.load()
        response = await post_chat(g, {"Authorization": f"Bearer {session}"})
        assert response.headers["x-ratelimit-limit"] == "1000"
        me = await g.client.get("/v1/auth/me", headers={"Authorization": f"Bearer {session}"})
        assert me.json()["plan"]["name"] == "pro"


async def test_refused_calls_are_not_billed(tmp_path: Path) -> None:
    async with gateway(tmp_path, plans(requests_per_minute=1), clock=Clock()) as g:
        auth = g.operator_token("alice")
        assert (await post_chat(g, auth)).status_code == 200
        assert (await post_chat(g, auth)).status_code == 429
        records = await g.store.call(g.store.usage_records)
        assert [r.status for r in records] == [200]


# --- the limiter on its own ---------------------------------------------------------------


class HttpLimiter(Limiter):
    """The limiter as an HTTP client meets it: its refusals mapped by the API layer."""

    async def admit(self, claims: keys.Claims, outcome: Outcome) -> None:
        try:
            await super().admit(claims, outcome)
        except Refused as exc:
            raise refusal(exc) from exc


def limiter(clock: Clock, **limits: int) -> Limiter:
    return HttpLimiter(plans(**limits).get, clock)


async def test_image_quota() -> None:
    clock = Clock()
    lim = limiter(clock, images_per_day=2)
    image = Outcome("alice", "j", "sd", "image", images=2)
    await lim.admit(claims(), image)
    await lim.record(claims(), image)
    with pytest.raises(ApiError) as caught:
        await lim.admit(claims(), Outcome("alice", "j", "sd", "image"))
    assert caught.value.status == 429
    assert caught.value.body["error"]["code"] == "insufficient_quota"
    assert "2 images" in caught.value.body["error"]["message"]
    await lim.admit(claims(), Outcome("alice", "j", "echo", "chat"))  # text is not images


async def test_audio_quota_holds_then_charges_seconds() -> None:
    clock = Clock()
    lim = limiter(clock, audio_seconds_per_day=10)
    speech = Outcome("alice", "j", "tts", "speech", budget_audio=8)
    await lim.admit(claims(), speech)
    assert lim.status("alice")["audio_seconds_held"] == 8
    # Held back while it runs: a transcription of 3 s does not fit beside it.
    with pytest.raises(ApiError, match="besides what your calls in flight"):
        await lim.admit(claims(), Outcome("alice", "j", "w", "transcription", budget_audio=3))
    speech.audio_seconds = 5  # it lasted less than the most it could
    await lim.record(claims(), speech)
    status = lim.status("alice")
    assert (status["audio_seconds_today"], status["audio_seconds_held"]) == (5, 0)
    assert status["tokens_today"] == 0  # audio is not charged in tokens
    await lim.admit(claims(), Outcome("alice", "j", "w", "translation", budget_audio=5))
    with pytest.raises(ApiError) as caught:
        await lim.admit(claims(), Outcome("alice", "j", "w", "transcription", budget_audio=1))
    assert caught.value.body["error"]["code"] == "insufficient_quota"
    assert "10 seconds of audio" in caught.value.body["error"]["message"]
    await lim.admit(claims(), Outcome("alice", "j", "echo", "chat"))  # text is not audio


async def test_note_remote_counts_requests_into_the_window() -> None:
    clock = Clock()
    lim = limiter(clock, requests_per_minute=3)
    lim.note_remote("alice", 2, 0, 0, clock.now - 50)
    await lim.admit(claims(), Outcome("alice", "j", "echo", "chat"))
    with pytest.raises(ApiError) as caught:
        await lim.admit(claims(), Outcome("alice", "j", "echo", "chat"))
    assert caught.value.headers["Retry-After"] == "10"  # the remote calls leave first
    clock.now += 10
    await lim.admit(claims(), Outcome("alice", "j", "echo", "chat"))
    # Too old to count, or someone else's.
    lim.note_remote("alice", 5, 0, 0, clock.now - 61)
    lim.note_remote("bob", 5, 0, 0, clock.now)
    assert lim.status("alice")["requests_this_minute"] == 2


async def test_note_remote_counts_tokens_and_images_for_today_only() -> None:
    clock = Clock()
    lim = limiter(clock, tokens_per_day=100, images_per_day=3)
    lim.note_remote("Alice", 1, 60, 1, clock.now - 5)
    lim.note_remote("alice", 1, 1000, 10, clock.now - 86400)  # yesterday
    status = lim.status("alice")
    assert (status["tokens_today"], status["images_today"]) == (60, 1)
    lim.note_remote("alice", 0, 40, 2, clock.now, audio=7)
    assert lim.status("alice")["audio_seconds_today"] == 7
    with pytest.raises(ApiError, match="100 tokens"):
        await lim.admit(claims(), Outcome("alice", "j", "echo", "chat"))
    with pytest.raises(ApiError, match="3 images"):
        await lim.admit(claims(), Outcome("alice", "j", "sd", "image"))


def used(at: float, tokens: int, images: int, audio: int = 0) -> UsageRecord:
    kind = "image" if images else "speech" if audio else "chat"
    return UsageRecord(
        at, utc_day(at), "alice", "k", "m", "p", kind, tokens, 0, images, 200, 5, audio
    )


async def test_daily_quotas_start_from_the_store(tmp_path: Path) -> None:
    clock = Clock()
    async with gateway(tmp_path) as g:
        rows = [used(T0 - 60, 50, 0), used(T0 - 30, 0, 2), used(T0 - 86400, 999, 9, 99)]
        await g.store.call(g.store.add_usage, [*rows, used(T0 - 9, 0, 0, 4)])
        lim = limiter(clock, tokens_per_day=50)
        await lim.load(g.store)
        status = lim.status("alice")
        assert (status["tokens_today"], status["images_today"]) == (50, 2)
        assert status["audio_seconds_today"] == 4
        with pytest.raises(ApiError, match="50 tokens"):
            await lim.admit(claims(), Outcome("alice", "j", "echo", "chat"))


async def test_headers_describe_the_minute_and_the_day() -> None:
    clock = Clock()
    lim = limiter(clock, requests_per_minute=10, tokens_per_day=1000)
    outcome = Outcome("alice", "j", "echo", "chat", prompt_tokens=100, completion_tokens=50)
    await lim.admit(claims(), outcome)
    await lim.record(claims(), outcome)
    clock.now += 15
    assert lim.headers(claims()) == {
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "9",
        "X-RateLimit-Reset": "45",
        "X-RateLimit-Limit-Tokens": "1000",
        "X-RateLimit-Remaining-Tokens": "850",
        "X-RateLimit-Reset-Tokens": "3585",
    }
    assert lim.status("alice")["inflight"] == 0
