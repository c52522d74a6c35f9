"""Publishes a node's signed self-description in the DHT and keeps it fresh.

The record lives under ``/bitinglip/node/<peer id>`` with an expiry inside the signed
body (DHT values themselves live 24 h); it is re-put with a higher seq every third of
its TTL and whenever it changes, so a dead node's record stops verifying within one TTL
without anyone deleting it. A node also provides ``/bitinglip/model/<id>`` for each ready
model; a gateway provides ``GATEWAYS_KEY``, through which nodes reach it
(``node.p2p.gateways``); a relay ``RELAYS_KEY``, where peers behind a NAT find it
(``node.p2p.relays``); a peer reached through relays ``RELAYED_KEY``, where gateways and
clients listing nodes find it.

A node's first DHT write waits a random time within ``spread`` (a node passes the eighth
to the half of its TTL), unless ``publish_now`` ends the wait (a node behind a NAT that
holds a relay slot: its circuit address is how anyone reaches it). Writing costs a walk
to the key's closest peers and a connection to each of them, tens of connections for a
node that just joined, and a swarm starting together would otherwise make them all at
once: at a hundred peers on two cores they kept the gateways' admissions queued past
their deadline. Nobody waits for it meanwhile: the record is signed at once and served
over RPC, and a node reaches the gateways itself (``node.p2p.gateways``), which adopt it
from that answer.

A key is provided once, and again only after ``provide_again`` (``PROVIDE_AGAIN`` unless
told): the DHT keeps provider records for 48 h, and providing walks to the key's closest
peers and stores at twenty of them, as a put does. Providing at every put cost each node
of an idle swarm of a hundred several DHT requests a second, most of the swarm's idle CPU.
Gateways are few and provide at every put: the first gateway of a swarm provides when it
is alone, and nodes find the gateways by asking the ones they meet for these providers.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.p2p.host import PeerHost
from protocols import (
    GATEWAYS_KEY,
    RELAYED_KEY,
    RELAYS_KEY,
    NodeRecord,
    model_key,
    node_key,
    sign_record,
)

logger = logging.getLogger(__name__)

# Once an hour: the peers that took a provider record may have left since.
PROVIDE_AGAIN = 3600.0

# Builds the current record for a given seq and issue time.
RecordFactory = Callable[[int, float], NodeRecord]


class Advertiser:
    def __init__(
        self,
        host: PeerHost,
        identity: Ed25519PrivateKey,
        build: RecordFactory,
        ttl: float,
        spread: tuple[float, float] = (0.0, 0.0),
        provide_again: float = PROVIDE_AGAIN,
    ) -> None:
        self._host = host
        self._identity = identity
        self._build = build
        self.ttl = ttl
        self.spread = spread
        self._wake = trio.Event()
        self.published = 0
        self.seq = 0
        self.signed = b""  # the last signed record: served over RPC, written to the DHT
        self._provided: dict[str, float] = {}  # key: when (trio's clock) it was provided
        self._urgent = False
        self._provide_again = provide_again

    def record(self) -> NodeRecord:
        # Milliseconds since the epoch: higher after a restart too, without saved state.
        now = time.time()
        return self._build(int(now * 1000), now)

    def sign(self) -> NodeRecord:
        """Sign the current record: what the RPC ``record`` method serves from now on."""
        record = self.record()
        # The certificate as it stands now: it is renewed while the peer runs.
        self.signed = sign_record(self._identity, record, self._host.certificate)
        self.seq = record.seq
        return record

    async def publish(self) -> NodeRecord:
        """Sign the current record and write it, and what we provide, to the DHT."""
        record = self.sign()
        try:
            await self._host.put(node_key(record.peer_id), self.signed)
            for model in record.ready_models():
                await self._provide(model_key(model))
            if record.role == "gateway":
                await self._provide(GATEWAYS_KEY)
            if self._host.nat.settings.serve:
                await self._provide(RELAYS_KEY)
            if self._host.nat.private and self._host.nat.reserved:
                await self._provide(RELAYED_KEY)
            self.published += 1
        except Exception as exc:  # a DHT hiccup must not stop the node; retry next round
            logger.warning("could not publish record: %r", exc)
        return record

    async def _provide(self, key: str) -> None:
        last = self._provided.get(key)
        if last is None or trio.current_time() - last >= self._provide_again:
            await self._host.provide(key)
            self._provided[key] = trio.current_time()

    def republish_soon(self) -> None:
        """Publish now rather than at the next interval (models or state changed); before
        the first DHT write, only sign again."""
        self._wake.set()

    def publish_now(self) -> None:
        """Publish now, even before the first DHT write was due."""
        self._urgent = True
        self._wake.set()

    async def run(self) -> None:
        first_put = trio.current_time() + random.uniform(*self.spread)
        while trio.current_time() < first_put and not self._urgent:
            self.sign()
            with trio.move_on_at(first_put):
                await self._wake.wait()
            self._wake = trio.Event()
        while True:
            with trio.move_on_after(self.ttl / 3):  # unreachable peers: keep the cadence
                await self.publish()
            with trio.move_on_after(self.ttl / 3):
                await self._wake.wait()
            self._wake = trio.Event()
