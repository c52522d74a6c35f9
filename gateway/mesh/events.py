"""What this gateway tells other gateways, and what it does with what they tell it.

The glue between the local limiter/revocation list and ``MeshSubscriptions``: local
components call ``usage``/``revoked``; events from other gateways go to ``apply``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

Publish = Callable[[dict[str, Any]], None]


def _nowhere(event: dict[str, Any]) -> None:
    pass


class MeshEvents:
    def __init__(self) -> None:
        self.publish: Publish = _nowhere
        self.on_usage: list[Callable[[str, int, int, int, float], None]] = []
        self.on_revoke: list[Callable[[str, float], None]] = []

    def usage(self, user: str, requests: int, tokens: int, images: int) -> None:
        """A call was counted here: tell the other gateways."""
        self.publish(
            {
                "kind": "usage",
                "user": user,
                "requests": requests,
                "tokens": tokens,
                "images": images,
                "at": time.time(),
            }
        )

    def revoked(self, jti: str, expires_at: float) -> None:
        """A key was revoked here: tell the other gateways."""
        self.publish({"kind": "revoke", "jti": jti, "expires_at": expires_at})

    def apply(self, event: dict[str, Any]) -> None:
        """An event from another gateway."""
        if event["kind"] == "usage":
            args = (
                str(event["user"]),
                int(event["requests"]),
                int(event["tokens"]),
                int(event["images"]),
                float(event["at"]),
            )
            for note in self.on_usage:
                note(*args)
        elif event["kind"] == "revoke":
            for revoke in self.on_revoke:
                revoke(str(event["jti"]), float(event["expires_at"]))
