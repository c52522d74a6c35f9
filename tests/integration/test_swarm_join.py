"""Many peers joining: real libp2p hosts on 127.0.0.1, in this process.

Thirty nodes start together against two gateways and each reaches the gateways as
``bitinglip node start`` does. Every node must be admitted at both gateways within
``CONVERGE_S``. All 32 hosts share this one process, so the test is as hard on CPU as a
swarm of 32 on one core: a join that dials more than it needs (py-libp2p's auto-connector,
the DHT's refresh at start, a provider walk per node) queues the admission exchanges past
their deadline, and the connections are closed and dialled again without end.

A bootstrap peer also keeps accepting connections after hundreds have come and gone (each
closed one used to hold one of py-libp2p's 250 inbound slots until the host stopped).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from keys import Membership
from node.p2p.gateways import keep_reaching
from node.p2p.host import PeerHost, _make_host, quiet_libp2p_logs
from protocols import GATEWAYS_KEY
from tests.integration.test_swarm_admission import (
    LISTEN,
    OPERATOR_PUBLIC,
    certificate,
    connected,
    peer,
    status_from,
)

NODES = 30
# 3-7 s on a quiet two-core machine, 7-15 s with three busy loops beside it (the process
# gets a third of a core). Before: 9 to 25 of 30 after 60 s, quiet or not.
CONVERGE_S = 60.0


def make_host(role: str) -> PeerHost:
    key = Ed25519PrivateKey.generate()
    return PeerHost(key, OPERATOR_PUBLIC, Membership(certificate(key, role)))


@asynccontextmanager
async def gateway(bootstrap: list[str]) -> AsyncIterator[PeerHost]:
    host = make_host("gateway")
    async with host.running(LISTEN, bootstrap):
        await host.provide(GATEWAYS_KEY)
        yield host


async def run_node(host: PeerHost, bootstrap: str) -> None:
    async with host.running(LISTEN, [bootstrap]):
        await keep_reaching(host)


async def test_thirty_nodes_started_at_once_are_all_admitted_at_every_gateway() -> None:
    quiet_libp2p_logs()  # as every peer runs: formatting its warnings costs seconds here
    async with gateway([]) as first, gateway([first.addrs()[0]]) as second:
        await first.provide(GATEWAYS_KEY)  # now that the second is there to hold it too
        gateways = (first, second)
        nodes = [make_host("node") for _ in range(NODES)]
        wanted = {n.peer_id for n in nodes}
        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for i, node in enumerate(nodes):
                nursery.start_soon(run_node, node, gateways[i % 2].addrs()[0])
            with trio.move_on_after(CONVERGE_S):
                while any(wanted - g.connected_members() for g in gateways):
                    await trio.sleep(0.25)
            admitted = [len(wanted & g.connected_members()) for g in gateways]
            nursery.cancel_scope.cancel()
        assert admitted == [NODES, NODES], f"after {time.monotonic() - started:.1f} s"


# py-libp2p 0.8.1 allows max_connections - min_connections = 250 inbound slots.
DIALERS, EACH = 10, 26


async def test_a_peer_accepts_connections_after_hundreds_have_come_and_gone() -> None:
    quiet_libp2p_logs()
    # Plain py-libp2p hosts that present no certificate: each connection is dropped anyway.
    dialers = [_make_host(Ed25519PrivateKey.generate()) for _ in range(DIALERS)]
    async with peer() as member, AsyncExitStack() as stack:
        for dialer in dialers:
            await stack.enter_async_context(dialer.run(listen_addrs=[]))
        target = info_from_p2p_addr(Multiaddr(member.addrs()[0]))

        async def come_and_go(dialer: Any) -> None:
            for _ in range(EACH):  # one at a time: a dialer reuses a connection it holds
                await dialer.connect(target)
                await dialer.get_network().close_peer(target.peer_id)

        async with trio.open_nursery() as nursery:
            for dialer in dialers:
                nursery.start_soon(come_and_go, dialer)
        async with peer(bootstrap=(member,)) as late:
            assert member.peer_id in connected(late)
            assert await status_from(late, member) == {"caller": late.peer_id}
