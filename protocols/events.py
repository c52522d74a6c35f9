"""What peers stream to each other on long-lived calls: a node's ``watch`` updates, and the
events gateways share (a call counted against a user, a key revoked).

Each is a frozen dataclass with its wire map (``to_wire``) and a checked way back
(``from_wire``, ``RemoteProtocolError`` for a malformed map), like every other payload.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from protocols.errors import RemoteProtocolError
from protocols.records import Load
from protocols.validate import exact, finite


@dataclass(frozen=True)
class WatchUpdate:
    """A node's load, and the seq of its signed record (fetch the record when it moves)."""

    load: Load
    record_seq: int

    def to_wire(self) -> dict[str, Any]:
        return asdict(self.load) | {"record_seq": self.record_seq}

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> WatchUpdate:
        load = Load.from_update(body)
        try:
            return cls(load, exact(body.get("record_seq", 0), int, "record_seq"))
        except ValueError as exc:
            raise RemoteProtocolError(f"malformed watch update: {exc}") from exc


@dataclass(frozen=True)
class UsageEvent:
    """Calls another gateway counted against ``user`` at ``at`` (wall-clock seconds)."""

    user: str
    requests: int
    tokens: int
    images: int
    at: float
    audio_seconds: int = 0  # absent from older gateways' events


@dataclass(frozen=True)
class RevokeEvent:
    """A token id another gateway revoked; ``expires_at`` is inf when unknown."""

    jti: str
    expires_at: float


GatewayEvent = UsageEvent | RevokeEvent
_KINDS: dict[str, type[GatewayEvent]] = {"usage": UsageEvent, "revoke": RevokeEvent}


def event_to_wire(event: GatewayEvent) -> dict[str, Any]:
    kind = "usage" if isinstance(event, UsageEvent) else "revoke"
    return {"kind": kind} | asdict(event)


def event_from_wire(body: dict[str, Any]) -> GatewayEvent | None:
    """The event in ``body``; None for a kind this version does not know (``hello``)."""
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in _KINDS:
        return None
    try:
        if kind == "usage":
            return UsageEvent(
                exact(body.get("user"), str, "user"),
                exact(body.get("requests"), int, "requests"),
                exact(body.get("tokens"), int, "tokens"),
                exact(body.get("images"), int, "images"),
                finite(body.get("at"), "at"),
                exact(body.get("audio_seconds", 0), int, "audio_seconds"),
            )
        expires_at = body.get("expires_at")
        if not (isinstance(expires_at, float) and expires_at == math.inf):
            expires_at = finite(expires_at, "expires_at")
        return RevokeEvent(exact(body.get("jti"), str, "jti"), float(expires_at))
    except ValueError as exc:
        raise RemoteProtocolError(f"malformed {kind} event: {exc}") from exc
