"""A private peer keeps slots at relays, so that peers it has not dialled can reach it.

Relays provide ``RELAYS_KEY`` (``node.p2p.advertise``). A peer with ``reachability =
"private"`` looks them up once it has joined, and every ``RESERVE_INTERVAL`` after: it
renews the slots it holds, drops relays that no longer answer, and takes slots at others
until ``WANTED`` relays hold one. Whenever the set changes, its record is published again
with the new circuit addresses (``PeerHost.addrs``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from node.p2p.host import PeerHost
from protocols import RELAYS_KEY

logger = logging.getLogger(__name__)

WANTED = 2  # one relay may restart; the second keeps us reachable meanwhile
RESERVE_INTERVAL = 30.0
RETRY_NONE = 2.0  # no relay yet: look again soon
LOOKUP_TIMEOUT = 10.0


async def reserve(host: PeerHost) -> set[str]:
    """Renew our slots and take new ones up to ``WANTED``; return the relays holding one."""
    found: set[str] = set()
    try:
        with trio.move_on_after(LOOKUP_TIMEOUT):
            found = await host.providers(RELAYS_KEY)
    except Exception as exc:  # a DHT hiccup: renew what we hold, look again next round
        logger.debug("relay lookup failed: %r", exc)
    now = time.time()
    for relay, expires in list(host.nat.reserved.items()):
        if expires <= now:
            del host.nat.reserved[relay]
    held = sorted(host.nat.reserved)
    for relay in held + sorted(found - set(held)):
        if relay not in held and len(host.nat.reserved) >= WANTED:
            break
        if relay not in host.connected_members() and not await host.connect_known(relay):
            host.nat.reserved.pop(relay, None)
            continue
        if await host.nat.reserve(relay):
            if relay not in held:
                logger.info("relay %s holds a slot for us", relay[-8:])
        elif relay in held:
            logger.warning("relay %s no longer holds our slot", relay[-8:])
    return set(host.nat.reserved)


async def keep_reserved(host: PeerHost, changed: Callable[[], None]) -> None:
    """``reserve`` now and every ``RESERVE_INTERVAL``; call ``changed`` when the relays
    holding our slots change."""
    holding: set[str] = set()
    while True:
        now = await reserve(host)
        if now != holding:
            holding = now
            changed()
        await trio.sleep(RESERVE_INTERVAL if holding else RETRY_NONE)
