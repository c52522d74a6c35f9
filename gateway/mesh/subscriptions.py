"""Gateways share usage and revocations with each other, peer to peer.

Each gateway serves ``events`` on its RPC service: a stream of what happened locally
(a call counted against a user, a key revoked). Every gateway subscribes to every other
gateway it finds in the DHT and applies what it hears, so a user cannot multiply their
limit by spreading calls over gateways, and a revoked key is refused everywhere within
the time one message takes to cross the swarm. No registry.

Only gateways of the same accounts (one database file, one token audience) share: the
subscriber names its accounts and another gateway's refuses it. Two gateways with their
own users each may both have an ``alice``; they are different people, with a quota each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from node.p2p.host import PeerHost
from node.p2p.logs import outside_calls
from node.p2p.rpc_client import CallFailed, RemoteError, RpcClient
from node.p2p.rpc_server import Caller, Emit, RpcError
from protocols import RPC_PROTOCOL, ErrorCode, NodeRecord, RemoteProtocolError
from protocols.events import GatewayEvent, event_from_wire

logger = logging.getLogger(__name__)

SUBSCRIBER_BUFFER = 10_000
OTHER_ACCOUNTS = "this gateway has other accounts: its users and usage are its own"

# Applies one event heard from another gateway.
Apply = Callable[[GatewayEvent], None]


class MeshSubscriptions:
    def __init__(
        self,
        host: PeerHost,
        accounts: str,
        apply: Apply,
        forget: Callable[[str], None] = lambda peer: None,
    ) -> None:
        self._host = host
        self._accounts = accounts
        self._apply = apply
        self._forget = forget
        self._subscribers: set[trio.MemorySendChannel[dict[str, Any]]] = set()
        self._nursery: trio.Nursery | None = None
        self.peers: set[str] = set()
        self.received = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def publish(self, event: dict[str, Any]) -> None:
        """Send a local event to every subscribed gateway, without waiting."""
        for send in list(self._subscribers):
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                # A subscriber this far behind is broken: drop it; it will resubscribe.
                logger.warning("a gateway fell behind on events; dropping its subscription")
                send.close()
                self._subscribers.discard(send)
            except trio.ClosedResourceError:
                self._subscribers.discard(send)

    async def rpc_events(
        self, params: dict[str, Any], caller: Caller, emit: Emit
    ) -> dict[str, Any]:
        """Stream this gateway's local events to another gateway until it goes away."""
        if caller.role != "gateway":
            raise RpcError(ErrorCode.UNAUTHORIZED, "only gateways may subscribe to events")
        if params.get("accounts") != self._accounts:
            raise RpcError(ErrorCode.UNAUTHORIZED, OTHER_ACCOUNTS)
        send, receive = trio.open_memory_channel[dict[str, Any]](SUBSCRIBER_BUFFER)
        self._subscribers.add(send)
        try:
            await emit({"kind": "hello"})
            async for event in receive:
                await emit(event)
        finally:
            self._subscribers.discard(send)
        return {}

    def connect_soon(self, record: NodeRecord) -> None:
        """Subscribe to another gateway's events (called by the tracker on discovery)."""
        if record.peer_id in self.peers or record.peer_id == self._host.peer_id:
            return
        assert self._nursery is not None, "MeshSubscriptions.run must be started first"
        self.peers.add(record.peer_id)
        self._nursery.start_soon(self._subscribe, record)

    @outside_calls  # a call's lookup may meet the gateway; the subscription outlives the call
    async def _subscribe(self, record: NodeRecord) -> None:
        peer = record.peer_id
        foreign = False
        try:
            stream = await self._host.open_stream(peer, record.addrs, RPC_PROTOCOL)
            async with RpcClient(stream, self._host.certificate).running() as client:
                try:
                    params = {"accounts": self._accounts}
                    async with client.open_call("events", params) as events:
                        logger.info("sharing usage with gateway %s", peer[-8:])
                        async for event in events:
                            self._receive(event)
                except CallFailed as exc:
                    foreign = isinstance(exc, RemoteError) and exc.message == OTHER_ACCOUNTS
                    if foreign:
                        logger.info("gateway %s has other accounts: no usage shared", peer[-8:])
                    else:
                        logger.info("gateway %s left: %s", peer[-8:], exc)
        except Exception as exc:  # one gateway's trouble must never take this one down
            logger.info("cannot share usage with gateway %s: %r", peer[-8:], exc)
        finally:
            if not foreign:  # a gateway of other accounts stays known: it is not asked again
                self.peers.discard(peer)
                self._forget(peer)

    def _receive(self, body: dict[str, Any]) -> None:
        try:
            event = event_from_wire(body)
        except RemoteProtocolError as exc:
            self.received += 1
            logger.warning("ignoring a malformed event from another gateway: %r", exc)
            return
        if event is None:  # a hello, or a kind this version does not know
            return
        self.received += 1
        self._apply(event)
