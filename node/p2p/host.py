"""The libp2p machinery every peer shares: host, Kademlia DHT, bootstrap, upkeep.

Security: Noise only (a default py-libp2p host also accepts plaintext peers); a connection
serves nothing until its peer presents a membership certificate (``node.p2p.gate``); the
DHT keeps only our namespace, records that verify, and admitted peers (``node.p2p.dht``);
multistream-select reads are bounded (``node.p2p.multistream``).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import AsyncIterator, Callable, Container
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
from node.p2p.peerstore import keep_swept
from node.p2p.relay import DIAL_TIMEOUT, NatTraversal, RelaySettings, is_circuit
from node.p2p.replicas import Replicas
from node.p2p.streams import Libp2pByteStream
from node.p2p.tasks import supervised
from node.p2p.yamux_window import release_window_lazily
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
REJOIN_FIRST = 1.0  # a peer with no member connected joins again after 1 s, 2, 4, ...
# A refresh walks the DHT once per non-empty bucket, a few hundred requests in a swarm of
# hundreds: 21 idle peers in one process refreshing every 15 s kept 50-70 % of a core
# busy, and a hundred peers refreshing within a minute of joining closed 1,300 connections
# whose admission the busy peers could not answer in time. Every ten minutes, as go-libp2p
# does, the first at a random time within them: lookups and stores fill the table too, and
# a walk starts from the connected peers while the table is nearly empty.
REFRESH_INTERVAL = 600.0
NEARBY_TIMEOUT = 5.0
IDENTIFY_POLL = 0.1
# A gateway holds a connection to every node it routes to: py-libp2p's default limit
# (go-libp2p's 300) refused every node past the 300th. Past ``PRUNE_ABOVE`` connections
# py-libp2p closes idle ones (no stream open, older than 20 s: a DHT walk's leftovers,
# never a gateway's node, whose RPC stream stays open) down to half of it.
MAX_CONNECTIONS = 8192
PRUNE_ABOVE = 1024


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


def _make_host(identity: Ed25519PrivateKey) -> Any:
    bound_multistream_reads()
    release_window_lazily()
    from libp2p import new_host
    from libp2p.crypto.x25519 import create_new_key_pair as new_x25519
    from libp2p.network.config import ConnectionConfig
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
    from libp2p.security.noise.transport import Transport as NoiseTransport

    key_pair = _libp2p_key_pair(identity)
    noise = NoiseTransport(key_pair, noise_privkey=new_x25519().private_key)
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_ID: noise},
        muxer_preference="YAMUX",
        # Not one connection per peer: with a limit of one, thirty peers joining at once
        # left half of them unadmitted at the gateways after 40 s (two peers dialing each
        # other at once hold two connections); with three they converged in 6 s. The cost
        # is a 250 ms "happy eyeballs" wait on a peer's first dial.
        connection_config=ConnectionConfig(
            max_connections_per_peer=3,
            max_connections=MAX_CONNECTIONS,
            high_watermark=PRUNE_ABOVE,
            low_watermark=PRUNE_ABOVE // 2,
        ),
    )
    _without_auto_connector(host.get_network())
    _without_inbound_slot_leak(host.get_network())
    return host


def _without_auto_connector(network: Any) -> None:
    """Our peers choose whom they connect to: bootstrap peers, gateways, DHT lookups.

    py-libp2p's auto-connector aims every host at 200 connections, dialling every peer in
    its peerstore every 10 s and after every disconnect: a swarm of N peers on one machine
    heads for N² connections, and thirty peers joining together spent the CPU on those
    handshakes while their admissions timed out."""

    async def stay_off() -> None:
        pass

    network.auto_connector.start = stay_off


def _without_inbound_slot_leak(network: Any) -> None:
    """py-libp2p takes an inbound slot (250 of them) for each connection accepted and gives
    it back only when the whole host stops: a gateway that had accepted 250 connections,
    closed or not, reset every dial after that, and nodes joining a 100-peer swarm through
    it could not reach it. The cap on live connections (``max_connections``) stays."""
    network._inbound_limiter = trio.CapacityLimiter(math.inf)


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
        self.replicas = Replicas(self.dht.value_store._store_at_peer, self._closest)
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
        self._nursery: trio.Nursery | None = None
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
            self._nursery = nursery
            async with self.host.run(listen_addrs=[multiaddr.Multiaddr(a) for a in listen]):
                nursery.start_soon(supervised, "peerstore sweep", self._keep_swept)
                nursery.start_soon(self.gate.run)
                await nursery.start(self.nat.run)
                async with background_trio_service(self.dht):
                    await self.join()
                    nursery.start_soon(self._maintain)
                    yield self
            nursery.cancel_scope.cancel()

    async def _keep_swept(self) -> None:
        await keep_swept(self.host.get_peerstore())

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
        from libp2p.peer.peerstore import PeerStoreError

        peer_id = ID.from_base58(peer)
        try:
            info = self.host.get_peerstore().peer_info(peer_id)
        except PeerStoreError:  # never heard of: nowhere to dial
            logger.debug("no address known for %s", peer[-8:])
            return False
        return await self._connect(info, peer[-8:])

    async def _connect(self, info: Any, shown: str) -> bool:
        if str(info.peer_id) == self.peer_id:
            return False
        try:
            self.host.get_peerstore().add_addrs(info.peer_id, info.addrs, 3600)
            # py-libp2p refuses for 60 s to redial a peer whose dial failed: a dial we ask
            # for by name (a bootstrap or gateway retry) is tried again all the same.
            self.host.get_network().unblock_peer(info.peer_id)
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
        """Connect to the bootstrap peers; ``_maintain`` fills the routing table later.

        Not at once: a refresh or a DHT lookup dials tens of peers, each a Noise handshake
        and an admission exchange, and a swarm's worth of peers doing so the moment they
        start queue so many that admissions time out, connections are dropped and
        redialled, and the swarm never settles."""
        for addr in self._bootstrap:
            await self.connect(addr)

    async def refresh(self) -> None:
        """Fill the routing table: a DHT walk towards us and towards each bucket."""
        try:
            with trio.move_on_after(10):
                await self.dht.peer_routing.refresh_routing_table()
        except Exception as exc:
            logger.debug("routing table refresh failed: %r", exc)

    async def _maintain(self) -> None:
        """Join again soon while no member is connected; refresh the routing table now and
        then; drop expired records."""
        # Staggered: many peers refreshing at once exhaust each other's inbound streams.
        refresh_at = trio.current_time() + random.uniform(0.1, 1.0) * REFRESH_INTERVAL
        rejoin = REJOIN_FIRST
        fetched = False
        while True:
            prune_expired(self.dht.value_store)
            if not self.connected_members():  # the join failed (a busy or absent bootstrap
                # peer) or every peer left: try again after 1 s, 2, 4, ... (jittered)
                await trio.sleep(rejoin * random.uniform(0.5, 1.5))
                rejoin = min(MAINTAIN_INTERVAL, rejoin * 2)
                await self.join()
                continue
            rejoin = REJOIN_FIRST
            await trio.sleep(MAINTAIN_INTERVAL * random.uniform(0.8, 1.2))
            if trio.current_time() >= refresh_at:
                refresh_at = trio.current_time() + REFRESH_INTERVAL * random.uniform(0.8, 1.2)
                await self.refresh()
                if not fetched:  # a list published while we were away (newer ones are
                    fetched = True  # pushed to us on admission)
                    await self._fetch_revocations()

    def connected_members(self) -> set[str]:
        """Members we hold a connection to."""
        return {peer for peer, _ in self._connected_certificates()}

    def _connected_certificates(self) -> list[tuple[str, Certificate]]:
        connected = (str(p) for p in self.host.get_connected_peers())
        return [(p, cert) for p in connected if (cert := self.admission.member(p)) is not None]

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
        """``put_value``'s checks and local store, then the value goes where it went last
        time (``node.p2p.replicas``) rather than where a fresh walk says."""
        validator = self.dht.validator
        assert validator is not None  # make_dht sets ours
        validator.validate(key, value)
        encoded = key.encode()
        held = self.dht.value_store.get(encoded)
        if held is not None and held.value != value and validator.select(key, [value, held.value]):
            raise ValueError("refusing to replace a newer value with an older one")
        self.dht.value_store.put(encoded, value)
        await self.replicas.put(encoded, value)

    async def _closest(self, key: bytes) -> list[Any]:
        """The key's closest peers but us, found by walking the DHT."""
        found = await self.dht.peer_routing.find_closest_peers_network(key)
        return [p for p in found if p != self.host.get_id()]

    async def get(self, key: str) -> bytes | None:
        value = await self.dht.get_value(key)
        return bytes(value) if value is not None else None

    async def provide(self, key: str) -> None:
        await self.dht.provide(key)

    async def providers(self, key: str) -> set[str]:
        infos = await self.dht.find_providers(key)
        return self._take_providers(infos)

    async def providers_nearby(self, key: str, roles: Container[str] = SERVER_ROLES) -> set[str]:
        """The providers of ``key`` that we and the DHT servers we are connected to (those
        in ``roles``) hold: one request to each, where ``providers`` walks the DHT and dials
        tens of peers."""
        from libp2p.kad_dht.kad_dht import _encode_key
        from libp2p.peer.id import ID

        encoded = _encode_key(key)  # as ``dht.provide`` stores it
        store = self.dht.provider_store
        infos = list(store.get_providers(encoded))
        servers = [p for p, cert in self._connected_certificates() if cert.role in roles]

        async def ask(peer: str) -> None:
            try:
                with trio.move_on_after(NEARBY_TIMEOUT):
                    # py-libp2p's one-peer GET_PROVIDERS, as its own lookup asks each peer.
                    held, _ = await store._get_providers_from_peer_with_closers(
                        ID.from_base58(peer), encoded
                    )
                    infos.extend(held)
            except Exception as exc:  # gone or busy: the others still answer
                logger.debug("providers of %s from %s: %r", key, peer[-8:], exc)

        async with trio.open_nursery() as nursery:
            for peer in servers:
                nursery.start_soon(ask, peer)
        return self._take_providers(infos)

    def hold_provider(self, key: str, peer: str, addrs: list[str]) -> None:
        """Keep ``peer`` as a provider of ``key`` in our own store, as if it had provided
        to us: ``providers_nearby`` asked of us names it."""
        import multiaddr
        from libp2p.kad_dht.kad_dht import _encode_key
        from libp2p.peer.id import ID
        from libp2p.peer.peerinfo import PeerInfo

        info = PeerInfo(ID.from_base58(peer), [multiaddr.Multiaddr(a) for a in addrs])
        self.dht.provider_store.add_provider(_encode_key(key), info)

    def _take_providers(self, infos: list[Any]) -> set[str]:
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
        if cert.role in SERVER_ROLES and self._nursery is not None:
            self._nursery.start_soon(self._to_routing_table, peer)
        if self.on_member is not None:
            self.on_member(peer, cert)

    async def _to_routing_table(self, peer: str) -> None:
        """Put a member that serves the DHT (its certificate says so) in the routing table
        once its addresses are known: a peer that dialled us tells them by identify, a
        moment after it is admitted."""
        from libp2p.peer.id import ID

        peer_id = ID.from_base58(peer)
        store = self.host.get_peerstore()
        for _ in range(int(ADMIT_TIMEOUT / IDENTIFY_POLL)):  # py-libp2p signals no identify
            if self.admission.member(peer) is None:
                return
            if store.has_peer(peer_id) and store.peer_info(peer_id).addrs:
                await self.dht.routing_table.add_peer(peer_id, skip_server_mode_check=True)
                return
            await trio.sleep(IDENTIFY_POLL)

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
