"""The hook every inference route goes through: admit, then record the outcome.

A ``Meter`` sees each call twice: ``admit`` before any work (raise ``LimitReached`` to
refuse) and ``record`` once the outcome is known (before the response completes, so a
durable meter loses nothing). Limits, the usage store and metrics are all meters.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import trio

import keys

# Calls charged by the seconds of audio they make (speech) or hear (the others).
AUDIO_KINDS = frozenset({"speech", "transcription", "translation"})


@dataclass
class Outcome:
    """What one inference call did; routes fill it in as they learn it."""

    user: str
    key_id: str
    model: str
    kind: str  # "chat" | "completion" | "image" | one of AUDIO_KINDS | ...
    # The most the call may use, known before it starts: quotas hold it back at admission
    # and settle with what was used, so calls at once cannot overshoot a quota together.
    budget_tokens: int = 0
    budget_images: int = 0
    budget_audio: int = 0
    peer_id: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    audio_seconds: int = 0  # made or heard, whole seconds rounded up
    status: int = 200
    started: float = field(default_factory=time.monotonic)
    latency: float = 0.0


class Meter(Protocol):
    async def admit(self, claims: keys.Claims, outcome: Outcome) -> None:
        """Refuse (raise ``LimitReached``) or let the call start."""
        ...

    async def record(self, claims: keys.Claims, outcome: Outcome) -> None:
        """The call ended (successfully or not); ``outcome`` is final."""
        ...

    def headers(self, claims: keys.Claims) -> dict[str, str]:
        """Headers to add to every response for this caller (rate-limit state)."""
        ...


@asynccontextmanager
async def metered(
    meters: list[Meter],
    claims: keys.Claims,
    model: str,
    kind: str,
    *,
    tokens: int = 0,
    images: int = 0,
    audio: int = 0,
) -> AsyncIterator[Outcome]:
    """Run a call through every meter; the outcome is recorded however the call ends.
    ``tokens``, ``images`` and ``audio`` (seconds): the most the call may use."""
    outcome = Outcome(claims.sub, claims.jti, model, kind, tokens, images, audio)
    admitted: list[Meter] = []
    try:
        for meter in meters:
            await meter.admit(claims, outcome)
            admitted.append(meter)
        yield outcome
    except BaseException as exc:
        if outcome.status < 400:
            outcome.status = _status(exc)
        raise
    finally:
        outcome.latency = time.monotonic() - outcome.started
        # Shielded: a client that hung up must still be charged and counted.
        with trio.CancelScope(shield=True):
            for meter in admitted:
                await meter.record(claims, outcome)


def _status(exc: BaseException) -> int:
    """The HTTP status a failed call ends with: an HTTP error's, a refusal's hint, 499 for a
    caller that went away (its task cancelled, or its stream of events closed), else 500."""
    status = getattr(exc, "status", None) or getattr(exc, "status_hint", None)
    if isinstance(status, int):
        return status
    return 499 if isinstance(exc, trio.Cancelled | GeneratorExit) else 500


def rate_headers(meters: list[Meter], claims: keys.Claims) -> dict[str, str]:
    headers: dict[str, str] = {}
    for meter in meters:
        headers.update(meter.headers(claims))
    return headers
