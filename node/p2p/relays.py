"""A private peer keeps slots at relays, so that peers it has not dialled can reach it.

Relays provide ``RELAYS_KEY`` (``node.p2p.advertise``). A peer with ``reachability =
"private"`` looks them up once it has joined, and every ``RESERVE_INTERVAL`` after: it
renews the slots it holds, drops relays that no longer answer, and takes slots at others
until ``WANTED`` relays hold one. Whenever the set changes, its record is published again
with the new circuit addresses (``PeerHost.addrs``). With ``"auto"``, a round first asks
up to ``ASKED`` relays to dial it back (``node.p2p.dialback``), until they answer and then
every ``RECHECK_INTERVAL``: private if none can; public, holding no slots, if one can.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from node.p2p.host import PeerHost
from node.p2p.lan import lan_addrs
from protocols import RELAYED_KEY, RELAYS_KEY

logger = logging.getLogger(__name__)

WANTED = 2  # one relay may restart; the second keeps us reachable meanwhile
ASKED = 2  # relays asked to dial us back ("auto")
RECHECK_INTERVAL = 300.0  # a known answer is asked again this often (addresses change)
RESERVE_INTERVAL = 30.0
RETRY_NONE = 2.0  # no relay yet: look again soon
LOOKUP_TIMEOUT = 10.0


async def _providers(host: PeerHost, key: str) -> set[str]:
    """The providers of ``key``; none where the lookup fails or takes too long (a DHT
    hiccup: the next round looks again)."""
    try:
        with trio.move_on_after(LOOKUP_TIMEOUT):
            return await host.providers(key)
    except Exception as exc:
        logger.debug("lookup of %s failed: %r", key, exc)
    return set()


async def relayed_peers(host: PeerHost) -> set[str]:
    """The peers reached through relays (``RELAYED_KEY``): routing tables never hold them,
    so whoever lists the swarm's nodes asks for them here."""
    return await _providers(host, RELAYED_KEY)


async def reserve(host: PeerHost) -> set[str]:
    """Renew our slots and take new ones up to ``WANTED``; return the relays holding one."""
    found = await _providers(host, RELAYS_KEY)
    due = time.monotonic() - host.nat.checked_at >= RECHECK_INTERVAL
    if host.nat.settings.reachability == "auto" and (host.nat.reachable is None or due):
        await find_out(host, found)
    if not host.nat.private:
        for relay in list(host.nat.reserved):
            host.nat.release(relay)
        return set()
    now = time.time()
    for relay, expires in list(host.nat.reserved.items()):
        if expires <= now:
            host.nat.release(relay)
    held = sorted(host.nat.reserved)
    for relay in held + sorted(found - set(held)):
        if relay not in held and len(host.nat.reserved) >= WANTED:
            break
        if relay not in host.connected_members() and not await host.connect_known(relay):
            host.nat.release(relay)
            continue
        if await host.nat.reserve(relay):
            if relay not in held:
                logger.info("relay %s holds a slot for us", relay[-8:])
        elif relay in held:
            logger.warning("relay %s no longer holds our slot", relay[-8:])
    return set(host.nat.reserved)


async def find_out(host: PeerHost, relays: set[str]) -> None:
    """Ask up to ``ASKED`` of ``relays`` to dial us back, and note whether any could."""
    addrs = lan_addrs([a.split("/p2p/")[0] for a in host.direct_addrs()])
    answers: list[list[str]] = []
    for relay in sorted(relays):
        if len(answers) >= ASKED:
            break
        if relay in host.connected_members() or await host.connect_known(relay):
            reached = await host.nat.check(relay, addrs)
            if reached is not None:
                answers.append(reached)
    if not answers:
        return  # no relay said: as we were, and ask again next round
    host.nat.checked_at = time.monotonic()
    reachable = any(answers)
    if reachable != host.nat.reachable:
        if reachable:
            logger.info("a relay dialled us back: public, advertising our own addresses")
        else:
            logger.info("no relay can dial us back: private, reached through relays")
    host.nat.reachable = reachable


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
