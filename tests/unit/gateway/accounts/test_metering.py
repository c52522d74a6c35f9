"""The metering hook every inference route goes through: which meters admit and record a
call, the status recorded however the call ends, and the rate-limit headers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import trio

import keys
from gateway.accounts.errors import LimitReached, Refused
from gateway.accounts.metering import Meter, Outcome, metered, rate_headers
from gateway.api.errors import ApiError

CLAIMS = keys.Claims("ann", "key-1", "inference", 0.0)


class Recorder:
    """A meter that notes what it saw; ``refuse`` makes ``admit`` raise a 429."""

    def __init__(self, name: str, log: list[str], refuse: bool = False) -> None:
        self.name = name
        self.log = log
        self.refuse = refuse
        self.recorded: list[Outcome] = []
        self.statuses: list[int] = []

    async def admit(self, claims: keys.Claims, outcome: Outcome) -> None:
        self.log.append(f"admit {self.name}")
        if self.refuse:
            raise ApiError(429, f"{self.name} says no", "rate_limit_exceeded")

    async def record(self, claims: keys.Claims, outcome: Outcome) -> None:
        await trio.lowlevel.checkpoint()  # would raise if the caller's cancellation reached it
        self.log.append(f"record {self.name}")
        self.recorded.append(outcome)
        self.statuses.append(outcome.status)

    def headers(self, claims: keys.Claims) -> dict[str, str]:
        return {f"X-{self.name}": claims.sub, "X-Shared": self.name}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """``time.monotonic`` as the hook sees it: pops the next value from the list."""
    times = [100.0]
    monkeypatch.setattr(
        "gateway.accounts.metering.time", SimpleNamespace(monotonic=lambda: times.pop(0))
    )
    return times


def meters(*names: str, refuse: str = "") -> tuple[list[Meter], list[str], list[Recorder]]:
    log: list[str] = []
    made = [Recorder(n, log, refuse=n == refuse) for n in names]
    return list(made), log, made


async def test_a_call_is_admitted_then_recorded_by_every_meter_in_order(clock: list[float]) -> None:
    chain, log, (a, b) = meters("a", "b")
    async with metered(chain, CLAIMS, "echo", "chat") as outcome:
        assert log == ["admit a", "admit b"]
        assert (outcome.user, outcome.key_id, outcome.model, outcome.kind) == (
            "ann",
            "key-1",
            "echo",
            "chat",
        )
        outcome.started = 96.5
        outcome.prompt_tokens = 5
    assert log == ["admit a", "admit b", "record a", "record b"]
    assert a.recorded == b.recorded == [outcome]
    assert outcome.status == 200
    assert outcome.latency == 3.5


async def test_a_refusal_is_recorded_by_the_meters_that_had_admitted_the_call(
    clock: list[float],
) -> None:
    chain, log, (a, b, c) = meters("a", "b", "c", refuse="b")
    with pytest.raises(ApiError) as caught:
        async with metered(chain, CLAIMS, "echo", "chat"):
            pytest.fail("a refused call must not run")
    assert str(caught.value.body["error"]["message"]) == "b says no"
    assert log == ["admit a", "admit b", "record a"]
    assert a.statuses == [429]
    assert b.recorded == c.recorded == []


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (RuntimeError("bug"), 500),
        (ApiError(404, "no such model", "model_not_found"), 404),
        (Refused("user 'ann' is disabled", "account_disabled", status_hint=403), 403),
        (LimitReached("too many calls", "rate_limit_exceeded", 7, {}), 429),
    ],
    ids=["bug", "http-error", "refusal", "limit"],
)
async def test_a_failed_call_is_recorded_with_its_status(
    clock: list[float], error: Exception, status: int
) -> None:
    chain, _, (a,) = meters("a")
    with pytest.raises(type(error)):
        async with metered(chain, CLAIMS, "echo", "chat"):
            raise error
    assert a.statuses == [status]


@pytest.mark.parametrize("status", [400, 502])
async def test_an_error_status_the_route_already_set_is_kept(
    clock: list[float], status: int
) -> None:
    chain, _, (a,) = meters("a")
    with pytest.raises(RuntimeError):
        async with metered(chain, CLAIMS, "echo", "chat") as outcome:
            outcome.status = status
            raise RuntimeError("upstream broke")
    assert a.statuses == [status]


async def test_a_status_below_400_is_replaced_by_the_failure(clock: list[float]) -> None:
    chain, _, (a,) = meters("a")
    with pytest.raises(RuntimeError):
        async with metered(chain, CLAIMS, "echo", "chat") as outcome:
            outcome.status = 399
            raise RuntimeError("late failure")
    assert a.statuses == [500]


async def test_a_client_that_hung_up_is_still_charged_as_499(clock: list[float]) -> None:
    chain, log, (a, b) = meters("a", "b")
    with trio.CancelScope() as scope:
        async with metered(chain, CLAIMS, "echo", "chat") as outcome:
            outcome.completion_tokens = 3
            scope.cancel()
            await trio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    assert log[-2:] == ["record a", "record b"]
    assert a.statuses == b.statuses == [499]
    assert a.recorded[0].completion_tokens == 3


async def test_a_closed_event_stream_is_charged_as_499(clock: list[float]) -> None:
    # A response that closes its events (the client gone) ends the call with GeneratorExit.
    chain, _, (a,) = meters("a")

    async def events() -> Any:
        async with metered(chain, CLAIMS, "echo", "chat") as outcome:
            outcome.completion_tokens = 2
            yield b"data"
            yield b"never sent"

    stream = events()
    assert await anext(stream) == b"data"
    await stream.aclose()
    assert a.statuses == [499]
    assert a.recorded[0].completion_tokens == 2


def test_rate_headers_merge_every_meter_later_ones_winning() -> None:
    chain, _, _ = meters("a", "b")
    assert rate_headers(chain, CLAIMS) == {"X-a": "ann", "X-b": "ann", "X-Shared": "b"}
    assert rate_headers([], CLAIMS) == {}


def test_a_fresh_outcome_is_a_successful_empty_call() -> None:
    outcome = Outcome("ann", "k", "echo", "chat")
    fields: dict[str, Any] = {
        "peer_id": "",
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "images": 0,
        "status": 200,
        "latency": 0.0,
    }
    assert {name: getattr(outcome, name) for name in fields} == fields
