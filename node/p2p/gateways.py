"""A node reaches out to the swarm's gateways, so each gateway meets it in one round trip.

A gateway adopts a node the moment the node is admitted on a connection
(``gateway.routing.tracker``). Left to find nodes itself, a gateway learns of a node that
joined through another peer only once the node enters its DHT routing table, which holds
about 20 peers per distance bucket: in a swarm of hundreds most nodes never do, and the
gateway's lookups of the ones that do grow with the swarm. Instead every gateway provides
``GATEWAYS_KEY``; a node looks up its providers once it has joined, and again every
``REACH_INTERVAL`` (gateways come and go), and connects to each it is not connected to.
The cost is one provider lookup per interval per node, and one connection per (gateway,
node) pair, which the gateway needs anyway to route to the node.
"""

from __future__ import annotations

import logging

import trio

from node.p2p.host import PeerHost
from protocols import GATEWAYS_KEY

logger = logging.getLogger(__name__)

REACH_INTERVAL = 30.0
# A node that joins before any gateway has provided: look again soon, not in 30 s.
RETRY_EMPTY = 2.0
LOOKUP_TIMEOUT = 10.0


async def reach(host: PeerHost) -> int:
    """Connect to every gateway the DHT lists that we are not connected to; return how
    many we are connected to now."""
    found: set[str] = set()
    try:
        with trio.move_on_after(LOOKUP_TIMEOUT):
            found = await host.providers(GATEWAYS_KEY)
    except Exception as exc:  # a DHT hiccup: try again next round
        logger.debug("gateway lookup failed: %r", exc)
    fresh = found - host.connected_members()
    async with trio.open_nursery() as nursery:
        for peer in fresh:
            nursery.start_soon(host.connect_known, peer)
    return len(found & host.connected_members())


async def keep_reaching(host: PeerHost) -> None:
    """``reach`` the gateways now and every ``REACH_INTERVAL``."""
    while True:
        reached = await reach(host)
        await trio.sleep(REACH_INTERVAL if reached else RETRY_EMPTY)
