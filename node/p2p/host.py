"""The libp2p machinery every peer shares: host, Kademlia DHT, bootstrap, upkeep.

Security: Noise only (a default py-libp2p host also accepts plaintext peers); a connection
serves nothing until its peer presents a membership certificate (``node.p2p.gate``); the
DHT keeps only our namespace, records that verify, and admitted peers (``node.p2p.dht``);
multistream-select reads are bounded (``node.p2p.multistream``).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import keys
from keys import Membership
from keys.files import raw_private, write_public
from keys.keyring import REVOKED
from node.p2p.admission import Admission, StreamHandler
from node.p2p.dht import RecordValidator, guard, make_dht, prune_expired
from node.p2p.gate import ADMIT_TIMEOUT, Gate
from node.p2p.multistream import bound_multistream_reads
from node.p2p.relay import DIAL_TIMEOUT, NatTraversal, RelaySettings, is_circuit
from node.p2p.streams import Libp2pByteStream
from protocols import (
    REVOKED_KEY,
    SERVER_ROLES,
    Certificate,
    RemoteProtocolError,
    node_key,
    verify_revocations,
)

logger = logging.getLogger(__name__)

MAINTAIN_INTERVAL = 15.0


class NotMember(Exception):
    """The peer at the other end is not admitted to the swarm."""


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


# py-libp2p's yamux sends a window update after every read by default; go-yamux waits until
# half the window is read. Each update is a Noise-encrypted socket write, one or more per
# RPC: waiting as go-yamux does served 19-27% more calls through a gateway here.
YAMUX_RELEASE_ON_READ = "PY_YAMUX_RELEASE_ON_READ"


def _make_host(identity: Ed25519PrivateKey) -> Any:
    bound_multistream_reads()
    os.environ.setdefault(YAMUX_RELEASE_ON_READ, "0")  # an operator's own setting wins
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


class PeerHost:
    """This process's libp2p host and its DHT, admitted by the operator's key.

    ``data_dir``, where given, keeps the newest revocation list across restarts.
    """

    def __init__(
        self,
        identity: Ed25519PrivateKey,
        operator_public: bytes,
        membership: Membership,
        data_dir: Path | None = None,
        relay: RelaySettings | None = None,
    ) -> None:
        self.host = _make_host(identity)
        self.nat = NatTraversal(self.host, relay or RelaySettings())
        self.membership = membership
        self._data_dir = data_dir
        saved = _saved_revocations(data_dir, operator_public)
        self.admission = Admission(
            operator_public, verify_revocations(saved, operator_public) if saved else None
        )
        validator = RecordValidator(operator_public, self.admission.revoked)
        self.dht = make_dht(self.host, validator)
        guard(self.dht, self.admission.member)
        self.gate = Gate(
            self.host,
            self.admission,
            membership,
            self._admitted,
            self._removed,
            self._save_revocations,
        )
        self.gate.revocations = saved
        self.peer_id = str(self.host.get_id())
        self._bootstrap: list[str] = []
        # Told of each peer admitted on a connection, with its certificate: a gateway
        # adopts a node it meets at once instead of waiting to find its record.
        self.on_member: Callable[[str, Certificate], None] | None = None

    @classmethod
    def of(cls, data_dir: Path, role: str, relay: RelaySettings | None = None) -> PeerHost:
        """The host of the peer whose keys are in ``data_dir``, admitted as ``role``."""
        membership = Membership.load(data_dir, role)  # first: it says how to get admitted
        identity, operator = keys.identity(data_dir), keys.operator_public(data_dir)
        return cls(identity, operator, membership, data_dir, relay)

    @property
    def certificate(self) -> bytes:
        """This peer's membership certificate as it stands now (it is renewed)."""
        return self.membership.certificate

    def addrs(self) -> list[str]:
        """Where others reach us, each ending in ``/p2p/<peer id>``: a private peer's
        circuit addresses once a relay holds a slot for it, else the direct ones."""
        if self.nat.private and self.nat.reserved:
            return self.nat.addrs()
        return self.direct_addrs()

    def direct_addrs(self) -> list[str]:
        """The addresses we listen on, each ending in ``/p2p/<peer id>``."""
        suffix = f"/p2p/{self.peer_id}"
        return [a if a.endswith(suffix) else a + suffix for a in map(str, self.host.get_addrs())]

    @asynccontextmanager
    async def running(self, listen: list[str], bootstrap: list[str]) -> AsyncIterator[PeerHost]:
        """Listen, join the DHT through ``bootstrap``, and keep the routing table fresh."""
        import multiaddr
        from libp2p.tools.anyio_service import background_trio_service

        self._bootstrap = list(bootstrap)
        async with trio.open_nursery() as nursery:
            self.gate.install(nursery)  # before the first connection can arrive
            async with self.host.run(listen_addrs=[multiaddr.Multiaddr(a) for a in listen]):
                nursery.start_soon(self.host.get_peerstore().start_cleanup_task, 60)
                nursery.start_soon(self.gate.run)
                await nursery.start(self.nat.run)
                async with background_trio_service(self.dht):
                    await self.join()
                    nursery.start_soon(self._maintain)
                    yield self
            nursery.cancel_scope.cancel()

    async def connect(self, addr: str) -> bool:
        """Connect to the peer at ``addr``; whether it answered and was admitted."""
        import multiaddr
        from libp2p.peer.peerinfo import info_from_p2p_addr

        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:  # a bad address: report, keep going
            logger.warning("cannot reach %s: %s", addr, exc)
            return False
        return await self._connect(info, addr)

    async def connect_known(self, peer: str) -> bool:
        """Connect to ``peer`` at the addresses the peerstore holds for it (a provider
        lookup puts them there); whether it answered and was admitted."""
        from libp2p.peer.id import ID

        peer_id = ID.from_base58(peer)
        return await self._connect(self.host.get_peerstore().peer_info(peer_id), peer[-8:])

    async def _connect(self, info: Any, shown: str) -> bool:
        if str(info.peer_id) == self.peer_id:
            return False
        try:
            self.host.get_peerstore().add_addrs(info.peer_id, info.addrs, 3600)
            with trio.fail_after(10):
                await self.host.connect(info)
        except Exception as exc:  # unreachable: report, keep going
            logger.warning("cannot reach %s: %s", shown, exc)
            return False
        if await self.admission.wait(str(info.peer_id), ADMIT_TIMEOUT) is None:
            logger.warning("%s is not a member of this swarm", shown)
            return False
        await self.dht.routing_table.add_peer(info.peer_id)
        return True

    async def join(self) -> None:
        """Connect to the bootstrap peers, then fill the routing table from them."""
        connected = [await self.connect(a) for a in self._bootstrap]
        if any(connected):
            await self.refresh()
            await self._fetch_revocations()

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
            prune_expired(self.dht.value_store)
            await trio.sleep(MAINTAIN_INTERVAL * random.uniform(0.8, 1.2))

    def connected_members(self) -> set[str]:
        """Members we hold a connection to."""
        connected = (str(p) for p in self.host.get_connected_peers())
        return {p for p in connected if self.admission.member(p) is not None}

    def known_peers(self) -> set[str]:
        """Members we are connected to, and peers in the routing table."""
        peers = self.connected_members()
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
        """Open a stream to member ``peer``, dialing ``addrs`` if not connected yet;
        ``NotMember`` if it does not present a certificate that admits it."""
        import multiaddr
        from libp2p.peer.id import ID

        peer_id = ID.from_base58(peer)
        direct = [multiaddr.Multiaddr(a.split("/p2p/")[0]) for a in addrs if not is_circuit(a)]
        if direct:
            self.host.get_peerstore().add_addrs(peer_id, direct, 3600)
        await self._reach(peer_id, addrs)
        with trio.fail_after(10):
            stream = Libp2pByteStream(await self.host.new_stream(peer_id, [protocol]))
        if await self.admission.wait(peer, ADMIT_TIMEOUT) is None:
            await stream.reset()
            raise NotMember(f"{peer} is not a member of this swarm")
        return stream

    async def _reach(self, peer_id: Any, addrs: list[str]) -> None:
        """Connect to ``peer_id`` through a relay when ``addrs`` name one and its direct
        addresses (if any) do not answer; ``new_stream`` dials direct addresses itself."""
        circuits = [a for a in addrs if is_circuit(a)]
        network = self.host.get_network()
        if not circuits or network.get_connections(peer_id):
            return
        if len(circuits) < len(addrs):
            try:
                with trio.fail_after(DIAL_TIMEOUT):
                    await network.dial_peer(peer_id)
                return
            except Exception as exc:  # behind a NAT after all: the relay it names
                logger.debug("no direct connection to %s: %r", str(peer_id)[-8:], exc)
        await self.nat.dial(str(peer_id), circuits)

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

    # Membership.

    async def publish_revocations(self, blob: bytes) -> int:
        """Apply an operator-signed revocation list here, push it to every connected peer
        (each passes it on) and put it in the DHT; return how many peers took it."""
        self.gate.take_revocations(blob)
        told = await self.gate.spread(blob)
        try:
            with trio.move_on_after(10):
                await self.put(REVOKED_KEY, blob)
        except Exception as exc:  # the pushes carry it; the DHT is for peers away now
            logger.warning("could not put the revocation list in the DHT: %r", exc)
        return told

    async def _fetch_revocations(self) -> None:
        try:
            with trio.move_on_after(5):
                blob = await self.get(REVOKED_KEY)
                if blob:
                    self.gate.take_revocations(blob)
        except Exception as exc:  # none published, or not reachable now: pushes still come
            logger.debug("no revocation list from the DHT: %r", exc)

    async def _admitted(self, peer: str, cert: Certificate) -> None:
        from libp2p.peer.id import ID

        if cert.role in SERVER_ROLES:
            await self.dht.routing_table.add_peer(ID.from_base58(peer))
        if self.on_member is not None:
            self.on_member(peer, cert)

    def _removed(self, peer: str) -> None:
        from libp2p.peer.id import ID

        self.dht.routing_table.remove_peer(ID.from_base58(peer))
        if self.admission.revoked(peer):  # its record, served to others, would not verify
            self.dht.value_store.remove(node_key(peer).encode())

    def _save_revocations(self, blob: bytes) -> None:
        if self._data_dir is not None:
            write_public(self._data_dir / REVOKED, blob)


def _saved_revocations(data_dir: Path | None, operator_public: bytes) -> bytes:
    """The revocation list kept in ``data_dir``, if it verifies; ``b""`` otherwise."""
    if data_dir is None:
        return b""
    try:
        blob = (data_dir / REVOKED).read_bytes()
        verify_revocations(blob, operator_public)
    except (OSError, RemoteProtocolError):
        return b""
    return blob
