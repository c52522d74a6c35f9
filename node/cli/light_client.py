"""Sees the swarm from inside, as a ``client`` peer, without trusting any gateway.

The client joins through bootstrap peers, reads each known peer's signed record from
the DHT (all at once, each with a short timeout: ``node.p2p.discovery``), verifies it
against the operator's key, and holds one RPC stream per peer it found. A node's live
load comes from its ``status`` method (a client may call it, never ``generate``); a
gateway's liveness is that its stream opens. Streams stay open between snapshots, so
``--watch`` refreshes cost one small call per node.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

import keys
from node.p2p.discovery import LOOKUP_TIMEOUT, look_up
from node.p2p.host import PeerHost
from node.p2p.relays import relayed_peers
from node.p2p.rpc_client import RpcClient
from protocols import (
    RPC_PROTOCOL,
    Load,
    NodeRecord,
    RemoteProtocolError,
    node_key,
    verify_certificate,
    verify_record,
)
from protocols.peers import PeerStatus

logger = logging.getLogger(__name__)

ASK_TIMEOUT = 3.0
ASK_SELF_TIMEOUT = 1.0  # a lookup's first second: the DHT has the rest
# A snapshot waits this long for records: peers met first are asked first, a lookup that
# times out waits RETRY_NO_RECORD, and those not reached are asked in the next snapshot.
LOOKUP_WAIT = LOOKUP_TIMEOUT + 0.5
RETRY_NO_RECORD = 30.0  # a peer with no record (another client) is asked again after this


class Unreachable(Exception):
    """No peer of the swarm could be reached."""


class _Peer:
    """A peer with a verified record and, while it answers, an RPC stream."""

    def __init__(self, record: NodeRecord) -> None:
        self.record = record
        self.client: RpcClient | None = None
        self.scope = trio.CancelScope()  # ends the client's read loop
        self.load: Load | None = None
        self.rtt_ms: float | None = None
        self.answered = 0.0  # wall time of its last answer; 0 if it never answered
        self.healthy = False  # answered in the latest snapshot

    def status(self, now: float) -> PeerStatus:
        seen = self.answered or self.record.issued_at
        return PeerStatus.from_record(self.record, self.load, now - seen, self.healthy, self.rtt_ms)


class LightClient:
    def __init__(self, host: PeerHost, nursery: trio.Nursery) -> None:
        self.host = host
        self._nursery = nursery
        self._peers: dict[str, _Peer] = {}
        self._no_record: dict[str, float] = {}

    @property
    def where(self) -> str:
        return f"the swarm, as client {self.host.peer_id[-8:]}"

    async def snapshot(self) -> list[PeerStatus]:
        """Every peer with a valid record, with a node's live load where it answers."""
        if not self.host.host.get_connected_peers():
            await self.host.join()
            if not self.host.host.get_connected_peers():
                raise Unreachable("cannot reach the swarm: no bootstrap peer answers")
        relayed = await relayed_peers(self.host)  # no routing table holds these
        now = time.time()
        due = [
            peer_id
            for peer_id in self.host.known_peers() | relayed
            if now - self._no_record.get(peer_id, -RETRY_NO_RECORD) >= RETRY_NO_RECORD
            and not self._open(peer_id)
        ]
        with trio.move_on_after(LOOKUP_WAIT):
            await look_up(self._record_of, self._take, due, self.host.connected_members())
        async with trio.open_nursery() as nursery:
            for peer in self._peers.values():
                nursery.start_soon(self._ask, peer)
        now = time.time()
        for gone in [p for p, e in self._peers.items() if now > e.record.expires_at]:
            self._peers.pop(gone).scope.cancel()
        return [p.status(now) for p in self._peers.values()]

    async def rpc(self, peer_id: str) -> RpcClient:
        """An RPC client to a peer the last snapshot found."""
        return await self._client(self._peers[peer_id])

    def _open(self, peer: str) -> bool:
        """Whether ``peer`` has a stream open: it serves its fresher record over RPC."""
        known = self._peers.get(peer)
        return known is not None and known.client is not None and not known.client.closed

    async def _record_of(self, peer: str) -> bytes | None:
        """The peer's record as the peer itself serves it, else as the DHT holds it.

        Asking the peer is one request where a DHT lookup walks to tens of peers, its
        answer is the freshest, and a node that just started serves its record seconds
        before its first DHT write (``node.p2p.advertise``). Gateways and clients serve no
        record: the DHT answers for them."""
        # Handlers outside the deadline's scope, as in the tracker (gateway.routing.tracker):
        # a stream breaking as the deadline passes only becomes an Exception on its exit.
        try:
            with trio.move_on_after(ASK_SELF_TIMEOUT):
                stream = await self.host.open_stream(peer, [], RPC_PROTOCOL)
                async with RpcClient(stream, self.host.certificate).running() as client:
                    reply = await client.call("record", {}, timeout=ASK_SELF_TIMEOUT)
                value = reply.get("record")
                if isinstance(value, bytes) and value:
                    return value
        except Exception as exc:  # not a node, or not answering: the DHT may know it
            logger.debug("%s serves no record: %r", peer[-8:], exc)
        return await self.host.get(node_key(peer))

    def _take(self, peer: str, value: bytes | None) -> None:
        known = self._peers.get(peer)
        record = self._verify(value, peer) if value else None
        if record is None:
            if known is None:
                self._no_record[peer] = time.time()
            return
        self._no_record.pop(peer, None)
        if known is None:
            self._peers[peer] = _Peer(record)
        elif record.seq > known.record.seq:
            known.record = record

    def _verify(self, value: object, peer: str) -> NodeRecord | None:
        if not isinstance(value, bytes):
            return None
        try:
            record = verify_record(
                value, self.host.admission.operator_public, time.time(), key=node_key(peer)
            )
        except RemoteProtocolError as exc:
            logger.info("ignoring a record for %s that does not verify: %s", peer, exc)
            return None
        return None if self.host.admission.revoked(peer) else record

    async def _ask(self, peer: _Peer) -> None:
        """Refresh what ``peer`` says about itself, or mark it as not answering."""
        peer.healthy, peer.rtt_ms = False, None
        # A host that vanished without a word costs a dial timeout: bound the whole look.
        try:
            with trio.move_on_after(ASK_TIMEOUT):
                client = await self._client(peer)
                if peer.record.role == "node":
                    await self._status(peer, client)
                elif client.closed:
                    return
                peer.healthy, peer.answered = True, time.time()
        except Exception as exc:  # refused, gone, or a dial error of libp2p's own kind
            logger.debug("%s does not answer: %r", peer.record.peer_id, exc)

    async def _status(self, peer: _Peer, client: RpcClient) -> None:
        started = time.monotonic()
        status = await client.call("status", {}, timeout=ASK_TIMEOUT)
        peer.rtt_ms = round((time.monotonic() - started) * 1000, 2)
        peer.load = Load.from_update(status)
        reply = await client.call("record", {}, timeout=ASK_TIMEOUT)
        fresh = self._verify(reply.get("record"), peer.record.peer_id)
        if fresh is not None and fresh.seq > peer.record.seq:
            peer.record = fresh

    async def _client(self, peer: _Peer) -> RpcClient:
        if peer.client is not None and not peer.client.closed:
            return peer.client
        record = peer.record
        stream = await self.host.open_stream(record.peer_id, record.addrs, RPC_PROTOCOL)
        client = RpcClient(stream, self.host.certificate)
        peer.scope = trio.CancelScope()
        await self._nursery.start(_serve, client, peer.scope)
        peer.client = client
        return client


async def _serve(
    client: RpcClient, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]
) -> None:
    with scope:
        await client.run(task_status=task_status)


def client_certificate(client_dir: Path, role: str = "client") -> bytes:
    """The client's certificate, checked to name this identity in ``role`` (``client``, or
    ``operator`` for one that may also manage nodes).

    Running as another role's identity would put a second host under a node's or a
    gateway's peer id, which the rest of the swarm cannot tell apart from the first.
    """
    operator_public = keys.operator_public(client_dir)
    blob = keys.certificate(client_dir, role)
    try:
        cert = verify_certificate(blob, operator_public, time.time())
    except RemoteProtocolError as exc:
        raise keys.NotAdmitted(f"the certificate in {client_dir} is not valid: {exc}") from exc
    if cert.role != role or cert.peer_id != keys.peer_id(client_dir):
        raise keys.NotAdmitted(
            f"the certificate in {client_dir} admits a {cert.role}, not this {role}: "
            f"admit {keys.peer_id(client_dir)} with `--role {role}`"
        )
    return blob


@asynccontextmanager
async def open_light_client(
    client_dir: Path, bootstrap: list[str], role: str = "client"
) -> AsyncIterator[LightClient]:
    """Join the swarm as the client in ``client_dir``; ``Unreachable`` if nobody answers."""
    from libp2p.kad_dht.kad_dht import DHTMode

    client_certificate(client_dir, role)  # one that will not do: say so before joining
    host = PeerHost.of(client_dir, role)
    # A passing client serves nobody's DHT queries, so nobody keeps it in a routing table.
    await host.dht.switch_mode(DHTMode.CLIENT)
    async with host.running([], bootstrap), trio.open_nursery() as nursery:
        if not host.host.get_connected_peers():
            tried = ", ".join(bootstrap) or "none given"
            raise Unreachable(f"cannot reach the swarm: no bootstrap peer answers (tried {tried})")
        # One passing client, not a swarm joining at once: fill the routing table now, so
        # the nodes its lookups need are known (peers leave that to their staggered upkeep).
        await host.refresh()
        yield LightClient(host, nursery)
        nursery.cancel_scope.cancel()
