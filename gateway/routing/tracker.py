"""Finds nodes through the DHT and keeps a live connection to each one.

Discovery: every peer the DHT knows about is looked up under ``/bitinglip/node/<id>``,
all at once with a short timeout each (``node.p2p.discovery``), so peers that are gone
cannot delay finding the ones that are here; so is every node behind a NAT, listed every
30 s under ``RELAYED_KEY`` (``node.p2p.relays``), which no routing table holds. A record
that verifies and names a node that is not revoked gets a connection. A node admitted on a
connection of this gateway's own is adopted at once instead: its record is asked for over
RPC as soon as it is admitted, with no DHT round trip or wait for the next look. Each
connection is one reused RPC stream carrying both the node's ``watch`` load updates and
this gateway's calls. A node whose stream breaks leaves routing at once; a node that goes silent is
suspect after three missed heartbeats and gone when its record expires.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from gateway.routing.peer_table import PeerTable
from node.p2p.discovery import look_up
from node.p2p.host import PeerHost
from node.p2p.logs import outside_calls
from node.p2p.relays import relayed_peers
from node.p2p.rpc_client import CallFailed, RpcClient
from protocols import (
    RPC_PROTOCOL,
    Certificate,
    NodeRecord,
    RemoteProtocolError,
    model_key,
    node_key,
    verify_record,
)
from protocols.events import WatchUpdate

logger = logging.getLogger(__name__)

DISCOVER_INTERVAL = 1.0
# A node met on a connection: how often, and how long, to ask it for its record before it
# has published one (it advertises as soon as it has joined).
ADOPT_EVERY = 0.1
ADOPT_FOR = 5.0
# A peer with no node record yet (a client, or a node that has not published) is looked up
# again after 1 s, then 2, 4, ... up to 30 s: a node that just started is found at once.
RETRY_FIRST = 1.0
RETRY_MAX = 30.0
DHT_TIMEOUT = 5.0
RELAYED_INTERVAL = 30.0


class Tracker:
    def __init__(self, host: PeerHost, table: PeerTable) -> None:
        self.host = host
        self.table = table
        self.clients: dict[str, RpcClient] = {}
        self._connecting: set[str] = set()
        # Nodes met on a connection whose record is being asked for: no DHT lookup for
        # them meanwhile (a swarm joining at once would cost a walk per node per gateway).
        self._adopting: set[str] = set()
        # Peers with no node record: when to look again, and the wait after that.
        self._not_nodes: dict[str, tuple[float, float]] = {}
        # Connected nodes that did not answer for their record: when (trio's clock) to ask
        # again, and the wait after that.
        self._readopt: dict[str, tuple[float, float]] = {}
        self._nursery: trio.Nursery | None = None
        # Other gateways are handed to ``on_gateway`` (usage and revocation sharing) and
        # skipped by discovery until ``forget_gateway`` says their connection ended.
        self.on_gateway: Callable[[NodeRecord], None] | None = None
        self.gateways: set[str] = set()
        self.changed = trio.Event()
        self.on_change: list[Callable[[], None]] = []  # told of every change to the table
        host.on_member = self._met

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            nursery.start_soon(self._discover_relayed)
            while True:
                await self.discover()
                self.table.expire(time.time())
                await trio.sleep(DISCOVER_INTERVAL)

    async def _discover_relayed(self) -> None:
        """Look up the nodes behind NATs (no routing table holds them) every
        ``RELAYED_INTERVAL``."""
        while True:
            fresh = await relayed_peers(self.host) - set(self.clients) - self._connecting
            await self._look_up(sorted(fresh - self.gateways))
            await trio.sleep(RELAYED_INTERVAL)

    def _met(self, peer: str, cert: Certificate) -> None:
        """A peer was admitted on a connection: if it is a node, adopt it now."""
        tracked = peer in self.clients or peer in self._connecting or peer in self._adopting
        if cert.role == "node" and not tracked and self._nursery is not None:
            self._adopting.add(peer)
            self._nursery.start_soon(self._adopt, peer)

    async def _adopt(self, peer: str) -> None:
        """Ask a node just met for its signed record, and track it like one found."""
        try:
            await self._ask_record(peer)
        finally:
            self._adopting.discard(peer)
            if peer in self.clients or peer in self._connecting:
                self._readopt.pop(peer, None)
            else:  # not now: asked again after 1 s, 2, 4, ... (a client is never adopted)
                _back_off(self._readopt, peer, trio.current_time())

    async def _ask_record(self, peer: str) -> None:
        # The handler is outside the deadline's scope: a stream that breaks as the deadline
        # passes raises the break and the deadline's cancellation together, and only the
        # scope's exit turns that pair into an error a handler inside it never sees (it
        # ended the whole tracker, every node's connection with it, in a swarm of 1,000).
        try:
            with trio.move_on_after(ADOPT_FOR):
                stream = await self.host.open_stream(peer, [], RPC_PROTOCOL)
                client = RpcClient(stream, self.host.certificate)
                async with client.running():
                    while peer not in self.clients and peer not in self._connecting:
                        reply = await client.call("record", {}, timeout=ADOPT_FOR)
                        value = reply.get("record")
                        if isinstance(value, bytes) and value:
                            self._take(peer, value)
                            return
                        await trio.sleep(ADOPT_EVERY)  # not published yet
        except Exception as exc:  # gone, or not serving yet: discovery finds it later
            logger.debug("could not adopt node %s: %r", peer[-8:], exc)

    def _verify(self, value: bytes) -> NodeRecord | None:
        try:
            record = verify_record(value, self.host.admission.operator_public, time.time())
        except RemoteProtocolError as exc:
            logger.warning("ignoring a record that does not verify: %s", exc)
            return None
        if self.host.admission.revoked(record.peer_id):
            return None
        return record if record.role in ("node", "gateway") else None

    async def discover(self) -> None:
        """Adopt every node we hold a connection to but do not track (its RPC stream broke
        while another connection stayed, so no new admission will tell us of it); look up
        every known peer we do not track yet."""
        now, clock = time.time(), trio.current_time()
        for peer in self.host.connected_members() - self.gateways:
            cert = self.host.admission.member(peer)
            if cert is not None and clock >= self._readopt.get(peer, (clock, RETRY_FIRST))[0]:
                self._met(peer, cert)
        fresh = [
            p
            for p in self.host.known_peers()
            if p not in self.clients
            and p not in self._connecting
            and p not in self._adopting
            and p not in self.gateways
            and now >= self._not_nodes.get(p, (now, RETRY_FIRST))[0]
        ]
        await self._look_up(fresh)

    async def _look_up(self, peers: list[str]) -> None:
        await look_up(self._record_of, self._take, peers, self.host.connected_members())

    async def _record_of(self, peer: str) -> bytes | None:
        return await self.host.get(node_key(peer))

    def _take(self, peer: str, value: bytes | None) -> None:
        """Verify what a lookup of ``peer`` found; track it if it is a node."""
        record = self._verify(value) if value else None
        if record is None or record.peer_id != peer:
            _back_off(self._not_nodes, peer, time.time())
            return
        self._not_nodes.pop(peer, None)
        if record.role == "gateway":
            if self.on_gateway is not None:
                self.gateways.add(peer)
                self.on_gateway(record)
            return
        self.table.upsert(record)
        self._connect_soon(record)

    async def find_model(self, model: str) -> None:
        """Ask the DHT who provides ``model`` and track those nodes (a cold-start path)."""
        providers: set[str] = set()
        try:
            with trio.move_on_after(DHT_TIMEOUT):
                providers = await self.host.providers(model_key(model))
        except Exception as exc:
            logger.debug("provider lookup of %s failed: %r", model, exc)
        fresh = providers - set(self.clients) - self._connecting
        for peer in fresh:
            self._not_nodes.pop(peer, None)
        await self._look_up(sorted(fresh))

    def forget_gateway(self, peer: str) -> None:
        self.gateways.discard(peer)

    def _connect_soon(self, record: NodeRecord) -> None:
        if record.peer_id in self.clients or record.peer_id in self._connecting:
            return
        assert self._nursery is not None, "Tracker.run must be started first"
        self._connecting.add(record.peer_id)
        self._nursery.start_soon(self._hold_connection, record)

    @outside_calls  # a call's lookup may start it; the connection outlives the call
    async def _hold_connection(self, record: NodeRecord) -> None:
        peer = record.peer_id
        try:
            stream = await self.host.open_stream(peer, record.addrs, RPC_PROTOCOL)
        except Exception as exc:
            logger.info("cannot connect to node %s: %r", peer[-8:], exc)
            self._connecting.discard(peer)
            self.table.remove(peer)
            return
        client = RpcClient(stream, self.host.certificate)
        try:
            async with client.running():
                self.clients[peer] = client
                self._connecting.discard(peer)
                try:
                    await self._watch(peer, client)
                except CallFailed as exc:
                    logger.info("node %s left: %s", peer[-8:], exc)
        except Exception:  # one node's trouble must never take the gateway down
            logger.exception("connection to node %s failed", peer[-8:])
        finally:
            self._connecting.discard(peer)
            self.clients.pop(peer, None)
            if self.host.admission.revoked(peer):  # out for good, not away for a while
                self.table.forget(peer)
            else:
                self.table.remove(peer)
            self._bump()

    async def _watch(self, peer: str, client: RpcClient) -> None:
        started = time.monotonic()
        async with client.open_call("watch", {}) as updates:
            async for body in updates:
                entry = self.table.entries.get(peer)
                if entry is None:
                    return
                if not entry.connected:
                    entry.rtt = time.monotonic() - started
                    logger.info(
                        "node %s joined: %s", peer[-8:], ", ".join(entry.record.ready_models())
                    )
                update = WatchUpdate.from_wire(body)
                self.table.update_load(peer, update.load, models=update.models)
                if update.record_seq > entry.record.seq:
                    await self._refresh_record(peer, client)
                self._bump()

    async def _refresh_record(self, peer: str, client: RpcClient) -> None:
        reply = await client.call("record", {}, timeout=5)
        value = reply.get("record")
        record = self._verify(value) if isinstance(value, bytes) and value else None
        if record is not None and record.peer_id == peer:
            self.table.upsert(record)

    def _bump(self) -> None:
        self.changed.set()
        self.changed = trio.Event()
        for hear in self.on_change:
            hear()


def _back_off(waits: dict[str, tuple[float, float]], peer: str, now: float) -> None:
    """Ask ``peer`` again after 1 s, then 2, 4, ... up to ``RETRY_MAX``: ``waits`` holds,
    per peer, when to ask next (on the clock ``now`` reads) and the wait after that."""
    wait = waits.get(peer, (0.0, RETRY_FIRST))[1]
    waits[peer] = (now + wait, min(RETRY_MAX, wait * 2))
