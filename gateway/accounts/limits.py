"""Plans and the meter that enforces them: requests per minute, daily quotas, concurrency.

The state is in memory (a sliding minute of request times, today's token, image and
audio counts, calls in flight per user); the daily counts start from the usage store, so a
restart does not hand out a fresh quota. ``note_remote`` counts calls that another gateway
served into the same windows. A refusal is a ``LimitReached`` (an HTTP 429 with ``Retry-After``).

A call is admitted only if the most it may use (its token, image or audio budget)
fits in what is left of the quota besides what the user's calls in flight hold back; the
budget is held back until the call is recorded, which settles it with what was used. So
calls started together cannot overshoot a quota, and a budget is never left held: every
admitted call is recorded however it ends, and holdings live only in memory (a restart
starts from the usage written, with nothing held).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import keys
from gateway.accounts.database import Store
from gateway.accounts.errors import LimitReached
from gateway.accounts.metering import AUDIO_KINDS, Outcome

logger = logging.getLogger(__name__)

DEFAULT_PLAN = "default"
WINDOW = 60.0  # seconds: requests_per_minute is counted over a sliding minute


# Settings where 0 means something (off, free) rather than "nothing allowed".
_MAY_BE_ZERO = frozenset({"job_priority", "response_cache", "cache_hit_percent"})


@dataclass(frozen=True)
class Plan:
    """What one user may do; every limit is a positive number (``_MAY_BE_ZERO`` aside)."""

    name: str = DEFAULT_PLAN
    requests_per_minute: int = 60
    tokens_per_day: int = 200_000
    images_per_day: int = 100
    concurrent: int = 4
    # Answers one chat or completion may ask for (``n``).
    max_choices: int = 4
    audio_seconds_per_day: int = 3600
    # Calls waiting for a busy model go in priority order: a higher class before a lower.
    priority: int = 1
    # Jobs: the highest priority a job may ask for (0 up to this), and how many jobs are
    # kept (waiting, running or with a result) at once.
    job_priority: int = 10
    jobs_kept: int = 100
    # The response cache: 1 answers repeated deterministic calls from it, 0 never; a hit is
    # charged this percent of the tokens the answer first took (it always counts a request).
    response_cache: int = 1
    cache_hit_percent: int = 0

    @classmethod
    def from_table(cls, name: str, table: Mapping[str, Any]) -> Plan:
        """A plan from its TOML table; unset limits keep the defaults."""
        limits = {f.name for f in fields(cls)} - {"name"}
        unknown = set(table) - limits
        if unknown:
            raise ValueError(f"plan {name!r}: unknown settings {', '.join(sorted(unknown))}")
        for key, value in table.items():
            least = 0 if key in _MAY_BE_ZERO else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                kind = "a whole number, 0 or more" if least == 0 else "a positive integer"
                raise ValueError(f"plan {name!r}: {key} must be {kind}")
        if table.get("response_cache", 1) > 1:
            raise ValueError(f"plan {name!r}: response_cache is 1 (on) or 0 (off)")
        return cls(name, **table)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Plans:
    """The configured plans by name, always including the default one."""

    def __init__(
        self, plans: Mapping[str, Plan] | None = None, default: str = DEFAULT_PLAN
    ) -> None:
        self._plans = dict(plans or {})
        self._plans.setdefault(DEFAULT_PLAN, Plan())
        if default not in self._plans:
            raise ValueError(f"default plan {default!r} is not defined")
        self.default = default

    @classmethod
    def from_config(cls, tables: Mapping[str, Mapping[str, Any]], default: str) -> Plans:
        """From ``[gateway.plans.<name>]`` tables."""
        return cls({name: Plan.from_table(name, t) for name, t in tables.items()}, default)

    def __contains__(self, name: object) -> bool:
        return name in self._plans

    def names(self) -> list[str]:
        return sorted(self._plans)

    def get(self, name: str | None) -> Plan:
        """The plan called ``name``; the default one for no name or a name not configured."""
        return self._plans.get(name or self.default) or self._plans[self.default]


def utc_day(at: float) -> str:
    return _day_name(int(at // 86400))


@functools.lru_cache(maxsize=4)
def _day_name(day: int) -> str:
    # Asked on every call; formatting a date each time cost more than the limit check.
    return datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")


def seconds_to_midnight(at: float) -> int:
    now = datetime.fromtimestamp(at, UTC)
    midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    return max(1, math.ceil(midnight.timestamp() - at))


@dataclass
class _Usage:
    """One user's counters: request times in the last minute, today's totals, calls open."""

    recent: deque[float] = field(default_factory=deque)
    day: str = ""
    tokens: int = 0
    images: int = 0
    audio: int = 0
    inflight: int = 0
    # What the calls in flight may still use: held back from the quotas until they end.
    held_tokens: int = 0
    held_images: int = 0
    held_audio: int = 0

    def roll(self, now: float) -> None:
        while self.recent and self.recent[0] <= now - WINDOW:
            self.recent.popleft()
        today = utc_day(now)
        if self.day != today:
            self.day, self.tokens, self.images, self.audio = today, 0, 0, 0

    def add(self, tokens: int, images: int, audio: int) -> None:
        self.tokens += tokens
        self.images += images
        self.audio += audio


@dataclass(frozen=True)
class _Quota:
    """One daily quota as it stands: its limit, what was used, what calls in flight hold."""

    what: str
    limit: int
    used: int
    held: int


class Limiter:
    """A ``Meter`` enforcing each user's plan on this gateway."""

    def __init__(
        self, plan_of: Callable[[str], Plan], clock: Callable[[], float] = time.time
    ) -> None:
        self._plan_of = plan_of
        self._clock = clock
        self._users: dict[str, _Usage] = {}

    async def load(self, store: Store) -> None:
        """Start today's quotas from what the store says was used today."""
        now = self._clock()
        for user, used in (await store.call(store.day_totals, utc_day(now))).items():
            self._state(user, now).add(used.tokens, used.images, used.audio_seconds)

    def _state(self, user: str, now: float) -> _Usage:
        state = self._users.setdefault(user.casefold(), _Usage())
        state.roll(now)
        return state

    async def admit(self, claims: keys.Claims, outcome: Outcome) -> None:
        now = self._clock()
        plan = self._plan_of(claims.sub)
        state = self._state(claims.sub, now)
        on = f"on plan {plan.name!r}"
        if state.inflight >= plan.concurrent:
            message = f"at most {plan.concurrent} concurrent requests {on}"
            raise self._refuse(claims, message, "concurrency_limit_exceeded", 1)
        if len(state.recent) >= plan.requests_per_minute:
            message = f"rate limit of {plan.requests_per_minute} requests per minute reached {on}"
            wait = math.ceil(state.recent[0] + WINDOW - now)
            raise self._refuse(claims, message, "rate_limit_exceeded", wait)
        if outcome.kind == "image":
            quota = _Quota("images", plan.images_per_day, state.images, state.held_images)
            self._check(claims, quota, outcome.budget_images, on, now, "ask for fewer images")
        elif outcome.kind in AUDIO_KINDS:
            quota = _Quota(
                "seconds of audio", plan.audio_seconds_per_day, state.audio, state.held_audio
            )
            self._check(claims, quota, outcome.budget_audio, on, now, "send less")
        else:
            quota = _Quota("tokens", plan.tokens_per_day, state.tokens, state.held_tokens)
            self._check(claims, quota, outcome.budget_tokens, on, now, "lower max_tokens")
        state.recent.append(now)
        state.inflight += 1
        state.held_tokens += outcome.budget_tokens
        state.held_images += outcome.budget_images
        state.held_audio += outcome.budget_audio

    def _check(
        self, claims: keys.Claims, quota: _Quota, budget: int, on: str, now: float, hint: str
    ) -> None:
        """Refuse a call whose ``budget`` does not fit in what is left of ``quota``."""
        need = max(1, budget)
        named = f"daily quota of {quota.limit} {quota.what}"
        if quota.used >= quota.limit:
            message, wait = f"{named} used up {on}", seconds_to_midnight(now)
        elif quota.used + need > quota.limit:
            left = quota.limit - quota.used
            message = f"{named} {on} has {left} left; this call may use {need} ({hint})"
            wait = seconds_to_midnight(now)
        elif quota.used + quota.held + need > quota.limit:
            left = quota.limit - quota.used - quota.held
            message = (
                f"{named} {on} has {max(0, left)} left besides what your calls in flight"
                f" may use; this call may use {need}"
            )
            wait = 1  # the calls in flight settle as they end
        else:
            return
        raise self._refuse(claims, message, "insufficient_quota", wait)

    async def record(self, claims: keys.Claims, outcome: Outcome) -> None:
        state = self._state(claims.sub, self._clock())
        state.inflight = max(0, state.inflight - 1)
        state.held_tokens = max(0, state.held_tokens - outcome.budget_tokens)
        state.held_images = max(0, state.held_images - outcome.budget_images)
        state.held_audio = max(0, state.held_audio - outcome.budget_audio)
        state.add(
            outcome.prompt_tokens + outcome.completion_tokens, outcome.images, outcome.audio_seconds
        )

    def note_remote(
        self, user: str, requests: int, tokens: int, images: int, at: float, audio: int = 0
    ) -> None:
        """Count calls another gateway served for ``user`` at ``at`` (wall-clock seconds)."""
        now = self._clock()
        state = self._state(user, now)
        if at > now - WINDOW:
            # More than the plan allows changes nothing: no bigger than that, whoever asks.
            count = min(max(0, requests), self._plan_of(user).requests_per_minute)
            # Kept in time order, so the oldest request still leaves the window first.
            state.recent = deque(sorted([*state.recent, *[min(at, now)] * count]))
        if utc_day(at) == state.day:
            state.add(max(0, tokens), max(0, images), max(0, audio))

    def headers(self, claims: keys.Claims) -> dict[str, str]:
        now = self._clock()
        plan = self._plan_of(claims.sub)
        state = self._state(claims.sub, now)
        reset = math.ceil(state.recent[0] + WINDOW - now) if state.recent else 0
        return {
            "X-RateLimit-Limit": str(plan.requests_per_minute),
            "X-RateLimit-Remaining": str(max(0, plan.requests_per_minute - len(state.recent))),
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Limit-Tokens": str(plan.tokens_per_day),
            "X-RateLimit-Remaining-Tokens": str(
                max(0, plan.tokens_per_day - state.tokens - state.held_tokens)
            ),
            "X-RateLimit-Reset-Tokens": str(seconds_to_midnight(now)),
        }

    def status(self, user: str) -> dict[str, Any]:
        """The user's plan and what is left of it now (for ``GET /v1/usage``)."""
        now = self._clock()
        plan = self._plan_of(user)
        state = self._state(user, now)
        return plan.as_json() | {
            "requests_this_minute": len(state.recent),
            "tokens_today": state.tokens,
            "images_today": state.images,
            "audio_seconds_today": state.audio,
            "inflight": state.inflight,
            "tokens_held": state.held_tokens,
            "images_held": state.held_images,
            "audio_seconds_held": state.held_audio,
        }

    def _refuse(self, claims: keys.Claims, message: str, code: str, wait: int) -> LimitReached:
        logger.debug("refused %s: %s", claims.sub, message)
        return LimitReached(message, code, max(1, wait), self.headers(claims))
