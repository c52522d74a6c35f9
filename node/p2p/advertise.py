"""Publishes a node's signed self-description in the DHT and keeps it fresh.

The record lives under ``/bitinglip/node/<peer id>`` with an expiry inside the signed
body (DHT values themselves live 24 h); it is re-put with a higher seq every third of
its TTL, so a dead node's record stops verifying within one TTL without anyone
deleting it. A node also provides ``/bitinglip/model/<id>`` for each ready model; a
gateway provides ``GATEWAYS_KEY``, through which nodes reach it (``node.p2p.gateways``);
a relay ``RELAYS_KEY``, where peers behind a NAT find it (``node.p2p.relays``); a peer
reached through relays ``RELAYED_KEY``, where gateways and clients listing nodes find it.
"""

from __future__ import annotations

import logging
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

# Builds the current record for a given seq and issue time.
RecordFactory = Callable[[int, float], NodeRecord]


class Advertiser:
    def __init__(
        self,
        host: PeerHost,
        identity: Ed25519PrivateKey,
        build: RecordFactory,
        ttl: float,
    ) -> None:
        self._host = host
        self._identity = identity
        self._build = build
        self.ttl = ttl
        self._wake = trio.Event()
        self.published = 0
        self.seq = 0
        self.signed = b""  # the last published DHT value, also served over RPC

    def record(self) -> NodeRecord:
        # Milliseconds since the epoch: higher after a restart too, without saved state.
        now = time.time()
        return self._build(int(now * 1000), now)

    async def publish(self) -> NodeRecord:
        record = self.record()
        # The certificate as it stands now: it is renewed while the peer runs.
        value = sign_record(self._identity, record, self._host.certificate)
        self.seq, self.signed = record.seq, value
        try:
            await self._host.put(node_key(record.peer_id), value)
            for model in record.ready_models():
                await self._host.provide(model_key(model))
            if record.role == "gateway":
                await self._host.provide(GATEWAYS_KEY)
            if self._host.nat.settings.serve:
                await self._host.provide(RELAYS_KEY)
            if self._host.nat.private and self._host.nat.reserved:
                await self._host.provide(RELAYED_KEY)
            self.published += 1
        except Exception as exc:  # a DHT hiccup must not stop the node; retry next round
            logger.warning("could not publish record: %r", exc)
        return record

    def republish_soon(self) -> None:
        """Publish now rather than at the next interval (models or state changed)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            with trio.move_on_after(self.ttl / 3):  # unreachable peers: keep the cadence
                await self.publish()
            with trio.move_on_after(self.ttl / 3):
                await self._wake.wait()
            self._wake = trio.Event()
