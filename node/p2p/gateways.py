"""A node reaches out to the swarm's gateways, so each gateway meets it in one round trip.

A gateway adopts a node the moment the node is admitted on a connection
(``gateway.routing.tracker``). Left to find nodes itself, a gateway learns of a node that
joined through another peer only once the node enters its DHT routing table, which holds
about 20 peers per distance bucket: in a swarm of hundreds most nodes never do, and the
gateway's lookups of the ones that do grow with the swarm. Instead every gateway provides
``GATEWAYS_KEY``, and a node connects to each provider it is not connected to.

Finding them is cheap at first: the peers a node is connected to (its bootstrap gateway
at least) are asked which providers they hold, one request each. Only when they name none
does the node walk the DHT, which dials tens of peers: a swarm's worth of nodes doing so
the moment they start kept each other's admissions queued past their deadline. A gateway
found but not reached (a dial or an admission that failed while the swarm was busy) is
tried again after ``RETRY_FIRST``, then twice as long each time, up to ``RETRY_MAX``, and
so is one whose connection is lost (a node looks at its own connections every
``CHECK_INTERVAL``). Once every gateway found is reached, the node asks the gateways it
is connected to for the others every ``ASK_INTERVAL`` (a gateway names every gateway it
has met) and walks the DHT for new ones every ``REACH_INTERVAL`` (gateways come and go).
Not more often: py-libp2p's walk asks most of a swarm of a hundred (a probe's lookups
asked 70 to 100 peers each), and a gateway that starts later finds the nodes itself
meanwhile (``gateway.routing.tracker``).
"""

from __future__ import annotations

import logging
import random

import trio

from node.p2p.host import PeerHost
from protocols import GATEWAYS_KEY

logger = logging.getLogger(__name__)

REACH_INTERVAL = 300.0
CHECK_INTERVAL = 1.0  # a look at our own connections, which costs nothing on the wire
ASK_INTERVAL = 30.0
RETRY_FIRST = 1.0
RETRY_MAX = 8.0  # also how late a node that started before any gateway finds one
LOOKUP_TIMEOUT = 10.0


async def find(host: PeerHost, walk: bool) -> set[str]:
    """The gateways the peers we are connected to name; with ``walk``, or when they name
    none, the gateways a DHT lookup finds instead (once connected to tens of peers, asking
    each would cost more than the walk)."""
    found: set[str] = set()
    if not walk:
        found = await host.providers_nearby(GATEWAYS_KEY)
        if found:
            return found
    try:
        with trio.move_on_after(LOOKUP_TIMEOUT):
            found |= await host.providers(GATEWAYS_KEY)
    except Exception as exc:  # a DHT hiccup: try again next round
        logger.debug("gateway lookup failed: %r", exc)
    return found


async def keep_reaching(host: PeerHost) -> None:
    """Stay connected to every gateway: find them (``find``), connect to those we are not
    connected to, look again every ``CHECK_INTERVAL`` (our own connections: no request)
    and reconnect at once to one we lost, retrying after ``RETRY_FIRST``, then twice as
    long up to ``RETRY_MAX``. Every ``ASK_INTERVAL`` the gateways we are connected to are
    asked which gateways they know (one request each: a gateway names every gateway it
    has met); every ``REACH_INTERVAL`` the DHT is walked for them."""
    known: set[str] = set()
    wait = RETRY_FIRST
    asked = walked = trio.current_time()
    walk_every = REACH_INTERVAL * random.uniform(0.8, 1.2)
    while True:
        now = trio.current_time()
        if not known:
            known, asked = await find(host, walk=False), now
        elif now - walked >= walk_every:
            known = await find(host, walk=True) or known
            walked, walk_every = now, REACH_INTERVAL * random.uniform(0.8, 1.2)
        elif now - asked >= ASK_INTERVAL:
            known |= await host.providers_nearby(GATEWAYS_KEY, roles=("gateway",))
            asked = now
        async with trio.open_nursery() as nursery:
            for peer in known - host.connected_members():
                nursery.start_soon(host.connect_known, peer)
        if known and known <= host.connected_members():
            wait = RETRY_FIRST
            await trio.sleep(CHECK_INTERVAL)
        else:  # jittered: nodes that failed together do not retry together
            await trio.sleep(wait * random.uniform(0.5, 1.5))
            wait = min(RETRY_MAX, wait * 2)
