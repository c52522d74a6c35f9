"""Tells every node this gateway reaches which models its calls wait for.

Once a second while calls wait or were refused lately (and once more when that ends), the
dispatcher's demand goes to each connected node on the RPC stream it already holds
(``demand``). Nodes merge the reports of every gateway and decide for themselves what to
load (node.worker.placement): nothing central decides where a model runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import trio

from node.p2p.rpc_client import RpcClient
from protocols import Demand, ModelDemand

logger = logging.getLogger(__name__)

EVERY = 1.0
TIMEOUT = 2.0


async def publish_demand(
    demand: Callable[[], dict[str, ModelDemand]],
    clients: Callable[[], Mapping[str, RpcClient]],
    every: float = EVERY,
) -> None:
    """Send ``demand()`` to every node in ``clients()`` each ``every`` seconds while it
    names a model, and once when it stops."""
    told = False
    while True:
        models = demand()
        if models or told:
            wire = Demand(models).to_wire()
            async with trio.open_nursery() as nursery:
                for peer, client in clients().items():
                    nursery.start_soon(_tell, peer, client, wire)
        told = bool(models)
        await trio.sleep(every)


async def _tell(peer: str, client: RpcClient, wire: dict[str, object]) -> None:
    try:
        await client.call("demand", wire, timeout=TIMEOUT)
    except Exception as exc:  # a node that cannot hear it simply places nothing
        logger.debug("node %s did not take the demand report: %r", peer[-8:], exc)
