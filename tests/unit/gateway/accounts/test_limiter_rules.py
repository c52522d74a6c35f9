"""The limiter on its own, at the edges of every rule: plans from config, the sliding
minute, daily quotas, concurrency, remote usage, and the exact refusals and headers.
A fake wall clock drives it; nothing sleeps."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

import pytest

import keys
from gateway.accounts.database import DayTotal, Store
from gateway.accounts.errors import LimitReached
from gateway.accounts.limits import (
    DEFAULT_PLAN,
    WINDOW,
    Limiter,
    Plan,
    Plans,
    seconds_to_midnight,
    utc_day,
)
from gateway.accounts.metering import Outcome
from gateway.api.errors import ApiError
from gateway.api.errors import refusal as http_refusal

# 23:00 UTC: an hour before the daily quotas start again.
T0 = datetime(2026, 3, 14, 23, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def claims(user: str = "ann") -> keys.Claims:
    return keys.Claims(user, f"jti-{user}", "inference", T0 + 3600)


def chat(user: str = "ann", **changes: Any) -> Outcome:
    outcome = Outcome(user, "j", "echo", "chat")
    for name, value in changes.items():
        setattr(outcome, name, value)
    return outcome


def image(user: str = "ann", images: int = 0) -> Outcome:
    return Outcome(user, "j", "sd", "image", images=images)


def limiter(clock: Clock, **limits: int) -> Limiter:
    plan = Plan("basic", **limits)
    return Limiter(lambda user: plan, clock)


async def refusal(lim: Limiter, outcome: Outcome | None = None, user: str = "ann") -> ApiError:
    """The limiter's refusal, as the HTTP layer turns it into an answer."""
    with pytest.raises(LimitReached) as caught:
        await lim.admit(claims(user), outcome or chat(user))
    answer = http_refusal(caught.value)
    assert answer.status == 429
    return answer


def error(refused: ApiError) -> tuple[str, str]:
    body = refused.body["error"]
    return str(body["code"]), str(body["message"])


# --- plans --------------------------------------------------------------------------------


def test_plan_defaults_and_json() -> None:
    assert DEFAULT_PLAN == "default"
    assert Plan().as_json() == {
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
    }


def test_a_plan_table_sets_only_what_it_names() -> None:
    assert Plan.from_table("p", {"images_per_day": 1, "concurrent": 1}) == Plan(
        "p", images_per_day=1, concurrent=1
    )
    assert Plan.from_table("empty", {}) == Plan("empty")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"name": "x"}, "plan 'p': unknown settings name"),
        ({"zeta": 1, "alpha": 1}, "plan 'p': unknown settings alpha, zeta"),
        ({"concurrent": 0}, "plan 'p': concurrent must be a positive integer"),
        ({"tokens_per_day": False}, "plan 'p': tokens_per_day must be a positive integer"),
        ({"images_per_day": 2.0}, "plan 'p': images_per_day must be a positive integer"),
    ],
)
def test_bad_plan_tables_say_what_is_wrong(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Plan.from_table("p", table)
    assert str(caught.value) == message


def test_one_is_the_smallest_limit() -> None:
    assert Plan.from_table("p", {"concurrent": 1}).concurrent == 1


def test_plans_always_hold_the_default_and_keep_a_configured_one() -> None:
    plans = Plans({"default": Plan("default", concurrent=9), "pro": Plan("pro")})
    assert plans.get("default").concurrent == 9
    assert plans.names() == ["default", "pro"]
    assert "pro" in plans and "default" in plans and "gold" not in plans
    assert Plans().names() == ["default"]
    assert Plans(None).get("anything") == Plan()


def test_the_default_plan_serves_no_name_and_unknown_names() -> None:
    plans = Plans({"free": Plan("free", 1), "pro": Plan("pro", 2)}, default="free")
    assert plans.default == "free"
    assert plans.get(None).name == "free"
    assert plans.get("").name == "free"
    assert plans.get("gone").name == "free"
    assert plans.get("pro").name == "pro"


def test_an_undefined_default_plan_is_named() -> None:
    with pytest.raises(ValueError) as caught:
        Plans({}, default="gold")
    assert str(caught.value) == "default plan 'gold' is not defined"


def test_plans_from_config_tables() -> None:
    plans = Plans.from_config({"free": {"concurrent": 1}}, "free")
    assert plans.get(None) == Plan("free", concurrent=1)
    assert plans.get("default") == Plan()


# --- days ---------------------------------------------------------------------------------


def test_days_are_utc_dates() -> None:
    assert utc_day(T0) == "2026-03-14"
    assert utc_day(T0 + 3599.5) == "2026-03-14"
    assert utc_day(T0 + 3600) == "2026-03-15"


def test_seconds_to_midnight_round_up_and_are_never_zero() -> None:
    assert seconds_to_midnight(T0) == 3600
    assert seconds_to_midnight(T0 + 0.5) == 3600
    assert seconds_to_midnight(T0 + 3599.5) == 1
    assert seconds_to_midnight(T0 + 3600) == 86400


# --- the sliding minute -------------------------------------------------------------------


async def test_the_minute_is_counted_up_to_the_limit_then_refused_with_the_wait() -> None:
    clock = Clock()
    lim = limiter(clock, requests_per_minute=2)
    await lim.admit(claims(), chat())
    clock.now += 20.5
    await lim.admit(claims(), chat())
    clock.now += 10
    refused = await refusal(lim)
    assert error(refused) == (
        "rate_limit_exceeded",
        "rate limit of 2 requests per minute reached on plan 'basic'",
    )
    assert refused.headers["Retry-After"] == "30"  # the first call leaves at T0 + 60
    assert refused.headers["X-RateLimit-Remaining"] == "0"


async def test_a_request_leaves_the_window_exactly_a_minute_later() -> None:
    clock = Clock()
    lim = limiter(clock, requests_per_minute=1)
    await lim.admit(claims(), chat())
    clock.now = T0 + WINDOW - 0.25
    refused = await refusal(lim)
    assert refused.headers["Retry-After"] == "1"
    clock.now = T0 + WINDOW
    await lim.admit(claims(), chat())
    assert WINDOW == 60.0


async def test_refused_calls_do_not_count() -> None:
    clock = Clock()
    lim = limiter(clock, requests_per_minute=1)
    await lim.admit(claims(), chat())
    await refusal(lim)
    await refusal(lim)
    assert lim.status("ann")["requests_this_minute"] == 1


async def test_users_are_counted_apart_and_names_ignore_case() -> None:
    clock = Clock()
    lim = limiter(clock, requests_per_minute=1)
    await lim.admit(claims("Ann"), chat("Ann"))
    await refusal(lim, user="ANN")
    await lim.admit(claims("bob"), chat("bob"))


# --- concurrency --------------------------------------------------------------------------


async def test_concurrency_is_capped_and_freed_by_each_record() -> None:
    clock = Clock()
    lim = limiter(clock, concurrent=2)
    await lim.admit(claims(), chat())
    await lim.admit(claims(), chat())
    refused = await refusal(lim)
    assert error(refused) == (
        "concurrency_limit_exceeded",
        "at most 2 concurrent requests on plan 'basic'",
    )
    assert refused.headers["Retry-After"] == "1"
    assert lim.status("ann")["inflight"] == 2
    await lim.record(claims(), chat())
    assert lim.status("ann")["inflight"] == 1
    await lim.admit(claims(), chat())


async def test_inflight_never_goes_below_zero() -> None:
    lim = limiter(Clock(), concurrent=1)
    await lim.record(claims(), chat())
    await lim.record(claims(), chat())
    assert lim.status("ann")["inflight"] == 0
    await lim.admit(claims(), chat())
    await refusal(lim)


async def test_concurrency_is_checked_before_the_minute() -> None:
    lim = limiter(Clock(), concurrent=1, requests_per_minute=1)
    await lim.admit(claims(), chat())
    assert error(await refusal(lim))[0] == "concurrency_limit_exceeded"


# --- daily quotas -------------------------------------------------------------------------


async def test_tokens_count_prompt_and_completion_up_to_the_quota() -> None:
    clock = Clock()
    lim = limiter(clock, tokens_per_day=100)
    await lim.admit(claims(), chat())
    await lim.record(claims(), chat(prompt_tokens=60, completion_tokens=39))
    assert lim.status("ann")["tokens_today"] == 99
    await lim.admit(claims(), chat())
    await lim.record(claims(), chat(completion_tokens=1))
    refused = await refusal(lim)
    assert error(refused) == (
        "insufficient_quota",
        "daily quota of 100 tokens used up on plan 'basic'",
    )
    assert refused.headers["Retry-After"] == "3600"
    await lim.admit(claims(), image())  # images have their own quota


async def test_images_count_up_to_their_quota() -> None:
    clock = Clock()
    lim = limiter(clock, images_per_day=3)
    await lim.admit(claims(), image())
    await lim.record(claims(), image(images=2))
    await lim.admit(claims(), image())
    await lim.record(claims(), image(images=1))
    assert lim.status("ann")["images_today"] == 3
    refused = await refusal(lim, image())
    assert error(refused) == (
        "insufficient_quota",
        "daily quota of 3 images used up on plan 'basic'",
    )
    clock.now = T0 + 3599.5
    assert (await refusal(lim, image())).headers["Retry-After"] == "1"
    await lim.admit(claims(), chat())  # text has its own quota


async def test_quotas_start_again_at_utc_midnight_but_the_minute_does_not() -> None:
    clock = Clock(T0 + 3599.5)
    lim = limiter(clock, tokens_per_day=10, images_per_day=1, requests_per_minute=3)
    await lim.admit(claims(), chat())
    await lim.record(claims(), chat(prompt_tokens=10, images=1))
    clock.now = T0 + 3600
    status = lim.status("ann")
    assert (status["tokens_today"], status["images_today"]) == (0, 0)
    assert status["requests_this_minute"] == 1
    await lim.admit(claims(), chat())


# --- remote usage -------------------------------------------------------------------------


def test_remote_requests_count_into_the_window_in_time_order() -> None:
    clock = Clock()
    lim = limiter(clock, requests_per_minute=10)
    lim.note_remote("ann", 2, 0, 0, T0 - 30)
    lim.note_remote("ann", 1, 0, 0, T0 - 50)
    assert lim.status("ann")["requests_this_minute"] == 3
    assert lim.headers(claims())["X-RateLimit-Reset"] == "10"  # the oldest leaves first
    clock.now = T0 + 10
    assert lim.status("ann")["requests_this_minute"] == 2


def test_remote_requests_from_the_future_count_as_now() -> None:
    clock = Clock()
    lim = limiter(clock, requests_per_minute=10)
    lim.note_remote("ann", 1, 0, 0, T0 + 1000)
    assert lim.headers(claims())["X-RateLimit-Reset"] == "60"


def test_remote_requests_are_capped_at_the_plan_and_never_negative() -> None:
    clock = Clock()
    lim = limiter(clock, requests_per_minute=3)
    lim.note_remote("ann", 50, 0, 0, T0)
    assert lim.status("ann")["requests_this_minute"] == 3
    lim.note_remote("bob", -5, -10, -2, T0)
    status = lim.status("bob")
    assert (status["requests_this_minute"], status["tokens_today"], status["images_today"]) == (
        0,
        0,
        0,
    )


def test_remote_requests_a_minute_old_do_not_count() -> None:
    lim = limiter(Clock(), requests_per_minute=3)
    lim.note_remote("ann", 1, 5, 1, T0 - WINDOW)
    status = lim.status("ann")
    assert status["requests_this_minute"] == 0
    assert (status["tokens_today"], status["images_today"]) == (5, 1)
    lim.note_remote("ann", 1, 0, 0, T0 - WINDOW + 0.5)
    assert lim.status("ann")["requests_this_minute"] == 1


def test_remote_tokens_and_images_of_another_day_do_not_count() -> None:
    lim = limiter(Clock())
    lim.note_remote("ann", 0, 7, 2, T0 + 3600)  # tomorrow already, on a clock ahead
    lim.note_remote("ann", 0, 7, 2, T0 - 86400)
    lim.note_remote("ann", 0, 3, 1, T0 - 3600)
    status = lim.status("ann")
    assert (status["tokens_today"], status["images_today"]) == (3, 1)


# --- headers and status -------------------------------------------------------------------


async def test_headers_of_a_fresh_user() -> None:
    lim = limiter(Clock(), requests_per_minute=5, tokens_per_day=50)
    assert lim.headers(claims()) == {
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "5",
        "X-RateLimit-Reset": "0",
        "X-RateLimit-Limit-Tokens": "50",
        "X-RateLimit-Remaining-Tokens": "50",
        "X-RateLimit-Reset-Tokens": "3600",
    }


async def test_remaining_never_goes_below_zero() -> None:
    clock = Clock()
    lim = limiter(clock, requests_per_minute=1, tokens_per_day=10)
    await lim.admit(claims(), chat())
    await lim.record(claims(), chat(prompt_tokens=25))
    lim.note_remote("ann", 5, 0, 0, T0)
    headers = lim.headers(claims())
    assert (headers["X-RateLimit-Remaining"], headers["X-RateLimit-Remaining-Tokens"]) == ("0", "0")


async def test_a_refusal_carries_every_rate_header_and_retry_after() -> None:
    lim = limiter(Clock(), concurrent=1)
    await lim.admit(claims(), chat())
    refused = await refusal(lim)
    assert refused.headers == lim.headers(claims()) | {"Retry-After": "1"}


async def test_status_is_the_plan_and_what_is_used() -> None:
    clock = Clock()
    lim = limiter(clock, requests_per_minute=9)
    await lim.admit(claims(), image())
    await lim.record(claims(), Outcome("ann", "j", "sd", "image", prompt_tokens=4, images=2))
    await lim.admit(claims(), chat())
    assert lim.status("ann") == Plan("basic", requests_per_minute=9).as_json() | {
        "requests_this_minute": 2,
        "tokens_today": 4,
        "images_today": 2,
        "audio_seconds_today": 0,
        "inflight": 1,
        "tokens_held": 0,
        "images_held": 0,
        "audio_seconds_held": 0,
    }


async def test_each_user_gets_their_own_plan() -> None:
    plans = {"ann": Plan("one", requests_per_minute=1), "bob": Plan("two", requests_per_minute=2)}
    lim = Limiter(lambda user: plans[user], Clock())
    await lim.admit(claims("ann"), chat("ann"))
    assert "on plan 'one'" in error(await refusal(lim, user="ann"))[1]
    await lim.admit(claims("bob"), chat("bob"))
    await lim.admit(claims("bob"), chat("bob"))
    assert error(await refusal(lim, user="bob"))[1] == (
        "rate limit of 2 requests per minute reached on plan 'two'"
    )


# --- what survives a restart, other time zones, logs --------------------------------------


class DayTotals:
    """The part of the store ``Limiter.load`` reads: today's totals per user."""

    def __init__(self, totals: dict[str, DayTotal]) -> None:
        self.totals = totals
        self.days: list[str] = []

    async def call(self, fn: Any, *args: Any) -> Any:
        return fn(*args)

    def day_totals(self, day: str) -> dict[str, DayTotal]:
        self.days.append(day)
        return self.totals


async def test_load_adds_todays_stored_usage_to_what_is_already_counted() -> None:
    lim = limiter(Clock(), tokens_per_day=100)
    lim.note_remote("ann", 0, 30, 1, T0, audio=5)
    store = DayTotals({"ann": DayTotal(50, 2, 6), "Bob": DayTotal(7, 0, 0)})
    await lim.load(cast(Store, store))
    assert store.days == ["2026-03-14"]
    status = lim.status("ann")
    assert (status["tokens_today"], status["images_today"]) == (80, 3)
    assert status["audio_seconds_today"] == 11
    assert lim.status("bob")["tokens_today"] == 7


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process runs in a time zone ten hours behind UTC."""
    monkeypatch.setenv("TZ", "HST+10")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_from_utc")
def test_days_and_midnight_are_utc_whatever_the_local_time_zone() -> None:
    assert utc_day(T0) == "2026-03-14"
    assert utc_day(T0 + 3600) == "2026-03-15"
    assert seconds_to_midnight(T0) == 3600
    # 02:00 UTC is still yesterday afternoon here.
    assert utc_day(T0 + 3 * 3600) == "2026-03-15"
    assert seconds_to_midnight(T0 + 3 * 3600) == 22 * 3600


async def test_remote_usage_and_status_follow_the_users_own_plan() -> None:
    plans = {"ann": Plan("one", requests_per_minute=1), "bob": Plan("two", requests_per_minute=5)}
    lim = Limiter(lambda user: plans[user], Clock())
    lim.note_remote("bob", 9, 0, 0, T0)
    assert lim.status("bob")["requests_this_minute"] == 5
    assert lim.status("ann")["name"] == "one"


async def test_each_refusal_is_logged_at_debug_with_the_user_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lim = limiter(Clock(), concurrent=1)
    await lim.admit(claims(), chat())
    with caplog.at_level(logging.DEBUG, logger="gateway.accounts.limits"):
        await refusal(lim)
    assert caplog.messages == ["refused ann: at most 1 concurrent requests on plan 'basic'"]
