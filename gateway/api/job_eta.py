"""A rough guess of when a queued job will be done, from what the nodes advertise.

The nodes that have the job's model ready offer ``slots`` calls at once (their capacity)
and have ``backlog`` calls in hand (running and queued, as their load says). The job waits
for that backlog and for the ``ahead`` jobs queued before it here, the whole line shared
over the slots, and then takes one call's time itself. A text call's time is its
``max_tokens`` at one slot's share of the nodes' advertised tokens per second; a node that
advertises no speed (image models do not) is taken at ``CALL_SECONDS`` a call. So the
figure is an upper bound for short answers and ignores how long calls already running have
left: it is for "minutes or hours?", not for a stopwatch.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.routing.peer_table import PeerTable

CALL_SECONDS = 10.0  # a call's time where the nodes say nothing of their speed


def eta_seconds(
    table: PeerTable, model: str, request: dict[str, Any], ahead: int, now: float | None = None
) -> float | None:
    """Seconds until a job for ``model`` with ``ahead`` jobs before it is done; None if no
    node has the model ready."""
    ready = table.candidates(model, time.time() if now is None else now)
    if not ready:
        return None
    slots = sum(max(1, e.load.capacity) for e in ready)
    backlog = sum(e.load.inflight + e.load.queued for e in ready)
    speed = sum(max(0.0, e.load.tokens_per_s) for e in ready) / slots
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens") or 256
    tokens = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 256
    per_call = tokens / speed if speed > 0 else CALL_SECONDS
    return round((backlog + ahead) / slots * per_call + per_call, 1)
