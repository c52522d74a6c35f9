"""The rows the database holds and the sums it makes of them, as frozen records."""

from __future__ import annotations

import re
from dataclasses import dataclass

USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{2,31}")


@dataclass(frozen=True)
class UserRecord:
    name: str
    password: str | None  # the scrypt hash; None: the user cannot log in
    plan: str
    disabled: bool
    created: float
    admin: bool = False  # may use the admin routes (with an admin-scoped token)


@dataclass(frozen=True)
class KeyRecord:
    jti: str
    user: str
    name: str
    created: float
    expires_at: float
    revoked_at: float | None


@dataclass(frozen=True)
class SessionRecord:
    """One login: its session token's id, and the browser or program that holds it."""

    jti: str
    user: str
    created: float
    last_used: float
    expires_at: float
    agent: str  # the client's User-Agent, as it said
    address: str | None
    ended_at: float | None = None


@dataclass(frozen=True)
class UsageRecord:
    """One inference call, as billed."""

    ts: float
    day: str  # UTC, YYYY-MM-DD
    user: str
    key_id: str
    model: str
    peer: str
    kind: str
    prompt_tokens: int
    completion_tokens: int
    images: int
    status: int
    latency_ms: int
    audio_seconds: int = 0


@dataclass(frozen=True)
class UsageTotal:
    day: str
    user: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    images: int
    audio_seconds: int


@dataclass(frozen=True)
class DayTotal:
    """One user's quota counts for a day."""

    tokens: int
    images: int
    audio_seconds: int


@dataclass(frozen=True)
class UsageSum:
    """Calls summed over one group: a user, a model, a day, or a model on a day (``key``,
    one value per column of the group)."""

    key: tuple[str, ...]
    requests: int
    prompt_tokens: int
    completion_tokens: int
    images: int
    audio_seconds: int


# What usage may be summed by, and the columns that hold it.
USAGE_GROUPS = {
    "user": ("user",),
    "model": ("model",),
    "date": ("day",),
    "date,model": ("day", "model"),
}


def check_username(name: str) -> None:
    """Raise ``ValueError`` for a name no user may have."""
    if not USERNAME.fullmatch(name):
        raise ValueError(
            "username must be 3-32 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
