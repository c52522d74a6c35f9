"""What this gateway tells other gateways, and what it does with what they tell it.

The glue between the local limiter/revocation list and ``MeshSubscriptions``: local
components call ``usage``/``revoked``; events from other gateways go to ``apply``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from protocols.events import GatewayEvent, RevokeEvent, UsageEvent, event_to_wire

Publish = Callable[[dict[str, Any]], None]


def _nowhere(event: dict[str, Any]) -> None:
    pass


class MeshEvents:
    def __init__(self) -> None:
        self.publish: Publish = _nowhere
        self.on_usage: list[Callable[[str, int, int, int, float, int], None]] = []
        self.on_revoke: list[Callable[[str, float], None]] = []

    def usage(self, user: str, requests: int, tokens: int, images: int, audio: int) -> None:
        """A call was counted here: tell the other gateways."""
        event = UsageEvent(user, requests, tokens, images, time.time(), audio)
        self.publish(event_to_wire(event))

    def revoked(self, jti: str, expires_at: float) -> None:
        """A key was revoked here: tell the other gateways."""
        self.publish(event_to_wire(RevokeEvent(jti, expires_at)))

    def apply(self, event: GatewayEvent) -> None:
        """An event from another gateway."""
        if isinstance(event, UsageEvent):
            for note in self.on_usage:
                note(
                    event.user,
                    event.requests,
                    event.tokens,
                    event.images,
                    event.at,
                    event.audio_seconds,
                )
        else:
            for revoke in self.on_revoke:
                revoke(event.jti, event.expires_at)
