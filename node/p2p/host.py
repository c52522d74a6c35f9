"""The libp2p machinery every peer shares: host, Kademlia DHT, bootstrap, upkeep.

Security: Noise only (a default py-libp2p host also accepts plaintext peers), and the
DHT namespace ``/bitinglip/`` accepts only records that verify against the operator's
key, so a peer that is not admitted can neither be routed to nor overwrite a record;
multistream-select reads are bounded (``node.p2p.multistream``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys.files import raw_private
from node.p2p.multistream import bound_multistream_reads
from node.p2p.streams import Libp2pByteStream
from protocols import (
    DHT_NAMESPACE,
    RemoteProtocolError,
    record_seq,
    verify_record,
)

if TYPE_CHECKING:
    from libp2p.records.validator import Validator

logger = logging.getLogger(__name__)

MAINTAIN_INTERVAL = 15.0


class RecordValidator:
    """DHT validator for ``/bitinglip/...`` keys: signed, admitted, unexpired, newest wins."""

    def __init__(self, operator_public: bytes) -> None:
        self._operator_public = operator_public

    def validate(self, key: str, value: bytes) -> None:
        try:
            verify_record(value, self._operator_public, time.time(), key=key)
        except RemoteProtocolError as exc:
            raise ValueError(f"rejected record for {key}: {exc}") from exc

    def select(self, key: str, values: list[bytes]) -> int:
        seqs = [record_seq(v) for v in values]
        return max(range(len(values)), key=seqs.__getitem__)


def quiet_libp2p_logs(level: int = logging.CRITICAL) -> None:
    """py-libp2p logs routine stream failures loudly; keep them out of people's terminals.

    Importing libp2p resets its logger, so import it first, then set the level.
    """
    import libp2p  # noqa: F401

    for name in ("libp2p", "multiaddr", "async_service"):
        log = logging.getLogger(name)
        log.setLevel(level)
        log.handlers = [logging.NullHandler()]
        log.propagate = level < logging.CRITICAL


def _libp2p_key_pair(identity: Ed25519PrivateKey) -> Any:
    from libp2p.crypto.ed25519 import Ed25519PrivateKey as Libp2pKey
    from libp2p.crypto.keys import KeyPair

    private = Libp2pKey.from_bytes(raw_private(identity))
    return KeyPair(private, private.get_public_key())


def _make_host(identity: Ed25519PrivateKey) -> Any:
    bound_multistream_reads()
    from libp2p import new_host
    from libp2p.crypto.x25519 import create_new_key_pair as new_x25519
    from libp2p.network.config import ConnectionConfig
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
    from libp2p.security.noise.transport import Transport as NoiseTransport

    key_pair = _libp2p_key_pair(identity)
    noise = NoiseTransport(key_pair, noise_privkey=new_x25519().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_ID: noise},
        muxer_preference="YAMUX",
        # One connection per peer: avoids a ~250 ms "happy eyeballs" wait on every dial.
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )


StreamHandler = Callable[[Libp2pByteStream], Awaitable[None]]


class PeerHost:
    """This process's libp2p host and its DHT, admitted by the operator's key."""

    def __init__(self, identity: Ed25519PrivateKey, operator_public: bytes) -> None:
        from libp2p.kad_dht.kad_dht import DHTMode, KadDHT

        self.host = _make_host(identity)
        # Every peer on one machine shares a subnet: lift the per-subnet cap for local swarms.
        self.dht = KadDHT(self.host, DHTMode.SERVER, max_peers_per_subnet=0)
        validator = cast("Validator", RecordValidator(operator_public))  # duck-typed by libp2p
        self.dht.register_validator(DHT_NAMESPACE, validator)
        self.peer_id = str(self.host.get_id())
        self._bootstrap: list[str] = []

    def addrs(self) -> list[str]:
        """Dialable addresses, each ending in ``/p2p/<peer id>``."""
        suffix = f"/p2p/{self.peer_id}"
        return [a if a.endswith(suffix) else a + suffix for a in map(str, self.host.get_addrs())]

    @asynccontextmanager
    async def running(self, listen: list[str], bootstrap: list[str]) -> AsyncIterator[PeerHost]:
        """Listen, join the DHT through ``bootstrap``, and keep the routing table fresh."""
        import multiaddr
        from libp2p.tools.anyio_service import background_trio_service

        self._bootstrap = list(bootstrap)
        async with (
            self.host.run(listen_addrs=[multiaddr.Multiaddr(a) for a in listen]),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self.host.get_peerstore().start_cleanup_task, 60)
            async with background_trio_service(self.dht):
                await self.join()
                nursery.start_soon(self._maintain)
                yield self
                nursery.cancel_scope.cancel()

    async def connect(self, addr: str) -> bool:
        import multiaddr
        from libp2p.peer.peerinfo import info_from_p2p_addr

        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
            if str(info.peer_id) == self.peer_id:
                return False
            self.host.get_peerstore().add_addrs(info.peer_id, info.addrs, 3600)
            with trio.fail_after(10):
                await self.host.connect(info)
            await self.dht.routing_table.add_peer(info.peer_id)
            return True
        except Exception as exc:  # unreachable or bad address: report, keep going
            logger.warning("cannot reach %s: %s", addr, exc)
            return False

    async def join(self) -> None:
        """Connect to the bootstrap peers, then fill the routing table from them."""
        connected = [await self.connect(a) for a in self._bootstrap]
        if any(connected):
            await self.refresh()

    async def refresh(self) -> None:
        try:
            with trio.move_on_after(10):
                await self.dht.refresh_routing_table()
        except Exception as exc:
            logger.debug("routing table refresh failed: %r", exc)

    async def _maintain(self) -> None:
        # Staggered: many peers refreshing at once exhaust each other's inbound streams.
        await trio.sleep(random.uniform(0.2, 1.0) * MAINTAIN_INTERVAL)
        while True:
            if not self.host.get_connected_peers():
                await self.join()
            else:
                await self.refresh()
            await trio.sleep(MAINTAIN_INTERVAL * random.uniform(0.8, 1.2))

    def known_peers(self) -> set[str]:
        """Peers we are connected to or hold in the routing table."""
        peers = {str(p) for p in self.host.get_connected_peers()}
        peers.update(str(p) for p in self.dht.routing_table.get_peer_ids())
        peers.discard(self.peer_id)
        return peers

    def set_handler(self, protocol: str, handler: StreamHandler) -> None:
        async def on_stream(stream: Any) -> None:
            wrapped = Libp2pByteStream(stream)
            try:
                await handler(wrapped)
            except Exception:  # an escaping exception would end the whole process
                logger.exception("stream handler for %s failed", protocol)
                await wrapped.reset()

        self.host.set_stream_handler(protocol, on_stream)

    async def open_stream(self, peer: str, addrs: list[str], protocol: str) -> Libp2pByteStream:
        """Open a stream to ``peer``, dialing ``addrs`` if not connected yet."""
        import multiaddr
        from libp2p.peer.id import ID

        peer_id = ID.from_base58(peer)
        usable = [multiaddr.Multiaddr(a.split("/p2p/")[0]) for a in addrs]
        if usable:
            self.host.get_peerstore().add_addrs(peer_id, usable, 3600)
        with trio.fail_after(10):
            stream = await self.host.new_stream(peer_id, [protocol])
        return Libp2pByteStream(stream)

    async def put(self, key: str, value: bytes) -> None:
        await self.dht.put_value(key, value)

    async def get(self, key: str) -> bytes | None:
        value = await self.dht.get_value(key)
        return bytes(value) if value is not None else None

    async def provide(self, key: str) -> None:
        await self.dht.provide(key)

    async def providers(self, key: str) -> set[str]:
        infos = await self.dht.find_providers(key)
        for info in infos:
            self.host.get_peerstore().add_addrs(info.peer_id, info.addrs, 3600)
        return {str(i.peer_id) for i in infos} - {self.peer_id}
