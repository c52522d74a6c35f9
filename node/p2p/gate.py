"""Admits connections: a peer without a valid membership certificate takes no part.

Right after Noise, each side of a new connection presents its certificate on an
``ADMIT_PROTOCOL`` stream (``protocols.membership``). Until the remote peer is admitted,
no other stream it opens is served (they wait up to ``ADMIT_TIMEOUT``); if it is not
admitted in that time, or presents a certificate that does not admit it, the connection
is closed. Members whose certificates expire, or whom the operator revokes, are
disconnected at once; a revocation list newer than ours is passed on to every connected
peer, so the whole swarm honours it within a few round trips.

py-libp2p 0.8.1 has no hook for this: the gate takes over the network's inbound stream
handler (protocol negotiation, then the admission check, then the protocol's handler).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import trio

from keys import Membership
from node.p2p.admission import Admission
from node.p2p.messages import MessageStream
from node.p2p.streams import Libp2pByteStream, StreamBroken
from protocols import (
    ADMIT_PROTOCOL,
    HELLO_MAX_FRAME,
    REVOKED_PROTOCOL,
    Certificate,
    End,
    Error,
    ErrorCode,
    FrameDecoder,
    Hello,
    Message,
    ProtocolError,
    RemoteProtocolError,
    encode,
    encode_frame,
    verify_revocations,
)

logger = logging.getLogger(__name__)

# Generous for a busy peer: thirty peers joining at once on one core queued exchanges past
# 5 s, and each connection closed for it was dialled again, which kept the core busy.
ADMIT_TIMEOUT = 10.0
SWEEP_INTERVAL = 1.0  # how often expired members are looked for
RENEW_INTERVAL = 60.0  # how often our own certificate is looked at for a renewal
NEGOTIATE_TIMEOUT = 10
REVOKED_MAX_FRAME = 1 << 20


class Gate:
    def __init__(
        self,
        host: Any,
        admission: Admission,
        membership: Membership,
        on_admitted: Callable[[str, Certificate], Awaitable[None]],
        on_removed: Callable[[str], None],
        save_revocations: Callable[[bytes], None],
    ) -> None:
        self._host = host
        self._admission = admission
        self._membership = membership
        self._on_admitted = on_admitted
        self._on_removed = on_removed
        self._save_revocations = save_revocations
        self.revocations = b""  # the signed list we hold, as received
        self._nursery: trio.Nursery | None = None

    def install(self, nursery: trio.Nursery) -> None:
        """Stand in front of every inbound stream and every new connection."""
        self._nursery = nursery
        network = self._host.get_network()
        network.set_stream_handler(self._on_stream)
        network.register_notifee(_Notifee(self))
        self._host.set_stream_handler(ADMIT_PROTOCOL, self._on_admit)
        self._host.set_stream_handler(REVOKED_PROTOCOL, self._on_revoked)

    async def run(self) -> None:
        """Disconnect members whose certificates expire; present ours again when renewed."""
        renew_at = trio.current_time() + RENEW_INTERVAL
        while True:
            await trio.sleep(SWEEP_INTERVAL)
            for peer in self._admission.expired():
                logger.info("certificate of %s expired: disconnecting", peer)
                await self.remove(peer)
            if trio.current_time() >= renew_at:
                renew_at = trio.current_time() + RENEW_INTERVAL
                if await trio.to_thread.run_sync(self._membership.refresh):
                    logger.info("membership certificate renewed: presenting it again")
                    await self.present_again()

    def _spawn(self, task: Callable[..., Awaitable[object]], *args: Any) -> None:
        assert self._nursery is not None, "Gate.install must be called first"
        self._nursery.start_soon(task, *args)

    def _connected(self) -> list[str]:
        return [str(p) for p in self._host.get_connected_peers()]

    async def remove(self, peer: str) -> None:
        """Forget ``peer`` and close every connection to it."""
        from libp2p.peer.id import ID

        self._admission.forget(peer)
        self._on_removed(peer)
        try:
            await self._host.get_network().close_peer(ID.from_base58(peer))
        except Exception as exc:  # already gone
            logger.debug("closing %s: %r", peer, exc)

    # Inbound streams: negotiated, then held until their peer is admitted.

    async def _on_stream(self, stream: Any) -> None:
        from libp2p.protocol_muxer.exceptions import MultiselectError
        from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator

        peer = str(stream.muxed_conn.peer_id)
        try:
            protocol, handler = await self._host.get_mux().negotiate(
                MultiselectCommunicator(stream), NEGOTIATE_TIMEOUT
            )
            if protocol is None or handler is None:
                raise MultiselectError(f"no handler for {protocol!r}")
            admitted = protocol == ADMIT_PROTOCOL or await self._admission.wait(peer, ADMIT_TIMEOUT)
            if not admitted:
                logger.debug("refusing %s from %s: not admitted", protocol, peer)
                await _reset(stream)
                return
            stream.set_protocol(protocol)
            await handler(stream)
        except MultiselectError as exc:
            logger.debug("no protocol agreed with %s: %s", peer, exc)
            await _reset(stream)
        except Exception:  # an escaping exception would end the whole process
            logger.exception("stream from %s failed", peer)
            await _reset(stream)

    # The admission exchange.

    async def connected(self, peer: str) -> None:
        """A new connection: present our certificate, and close it unless the peer is
        admitted in time."""
        self._spawn(self._present, peer)
        if await self._admission.wait(peer, ADMIT_TIMEOUT) is None:
            logger.info("%s was not admitted within %.0f s: disconnecting", peer, ADMIT_TIMEOUT)
            await self.remove(peer)

    async def present_again(self) -> None:
        """Present our (renewed) certificate to every connected peer."""
        async with trio.open_nursery() as nursery:
            for peer in self._connected():
                nursery.start_soon(self._present, peer)

    async def _present(self, peer: str) -> None:
        reply = await self._exchange(
            peer, ADMIT_PROTOCOL, encode(Hello(self._membership.certificate))
        )
        if isinstance(reply, Error):
            logger.warning("%s refused our certificate: %s", peer, reply.message)

    async def _on_admit(self, raw: Any) -> None:
        stream = Libp2pByteStream(raw)
        peer = stream.remote_peer
        messages = MessageStream(stream, max_frame=HELLO_MAX_FRAME)
        try:
            with trio.fail_after(ADMIT_TIMEOUT):
                message = await _receive_one(messages)
            if not isinstance(message, Hello):
                raise RemoteProtocolError("send hello first")
            cert = self._admission.check(message.certificate, peer)
        except ProtocolError as exc:  # a certificate that does not admit it: out
            logger.info("refusing %s: %s", peer, exc)
            await _answer(messages, Error(0, ErrorCode.UNAUTHORIZED, str(exc)))
            await self.remove(peer)
            return
        except (StreamBroken, trio.TooSlowError) as exc:
            # No verdict: the exchange broke (the presenter gave up on a busy peer). A
            # member stays one, and a peer never admitted is closed by ``connected``'s
            # deadline; closing every connection of a member here, its gateway streams
            # with them, made a busy swarm drop and redial its members over and over.
            logger.debug("no certificate from %s on this exchange: %r", peer, exc)
            await _answer(messages, Error(0, ErrorCode.UNAUTHORIZED, "no certificate in time"))
            return
        self._admission.admit(peer, cert)
        await _answer(messages, End(0, {}))
        await self._on_admitted(peer, cert)
        if self.revocations:
            self._spawn(self.push_revocations, peer, self.revocations)

    # Revocations.

    def take_revocations(self, blob: bytes, source: str | None = None) -> bool:
        """Apply a signed revocation list if it is newer than ours: disconnect the peers it
        revokes and pass it on. ``RemoteProtocolError`` if it does not verify."""
        revocations = verify_revocations(blob, self._admission.operator_public)
        members = self._admission.revise(revocations)
        if members is None:
            return False
        self.revocations = blob
        self._save_revocations(blob)
        for peer in {*members} | ({*revocations.peers} & {*self._connected()}):
            logger.warning("%s was revoked by the operator: disconnecting", peer)
            self._spawn(self.remove, peer)
        self._spawn(self.spread, blob, source)
        return True

    async def spread(self, blob: bytes, source: str | None = None) -> int:
        """Push a revocation list to every connected peer but ``source`` and the revoked;
        return how many took it."""
        revoked = self._admission.revocations
        peers = [p for p in self._connected() if p != source and p not in revoked]
        told = 0

        async def push(peer: str) -> None:
            nonlocal told
            told += await self.push_revocations(peer, blob)

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(push, peer)
        return told

    async def push_revocations(self, peer: str, blob: bytes) -> bool:
        """Push a revocation list to ``peer``; whether it took it."""
        frame = encode_frame(blob, REVOKED_MAX_FRAME)
        return isinstance(await self._exchange(peer, REVOKED_PROTOCOL, frame), End)

    async def _on_revoked(self, raw: Any) -> None:
        stream = Libp2pByteStream(raw)
        frames = FrameDecoder(REVOKED_MAX_FRAME)
        messages = MessageStream(stream)
        try:
            with trio.fail_after(ADMIT_TIMEOUT):
                blob = await _read_frame(stream, frames)
            self.take_revocations(blob, stream.remote_peer)
            await _answer(messages, End(0, {}))
        except (ProtocolError, StreamBroken, trio.TooSlowError) as exc:
            await _answer(messages, Error(0, ErrorCode.BAD_REQUEST, str(exc) or "too slow"))

    async def _exchange(self, peer: str, protocol: str, request: bytes) -> Message | None:
        """Open ``protocol`` to ``peer``, send ``request``, return its one reply."""
        from libp2p.peer.id import ID

        stream: Libp2pByteStream | None = None
        try:
            with trio.fail_after(ADMIT_TIMEOUT):
                stream = Libp2pByteStream(
                    await self._host.new_stream(ID.from_base58(peer), [protocol])
                )
                await stream.write(request)
                return await _receive_one(MessageStream(stream, max_frame=HELLO_MAX_FRAME))
        except Exception as exc:  # gone, refused, or a dial error of libp2p's own kind
            logger.debug("%s to %s failed: %r", protocol, peer, exc)
            return None
        finally:
            if stream is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await stream.close()


class _Notifee:
    """Tells the gate of each new connection (py-libp2p calls every method)."""

    def __init__(self, gate: Gate) -> None:
        self._gate = gate

    async def connected(self, network: Any, conn: Any) -> None:
        # py-libp2p awaits notifees while it sets the connection up: never block it.
        self._gate._spawn(self._gate.connected, str(conn.muxed_conn.peer_id))

    async def disconnected(self, network: Any, conn: Any) -> None:
        pass

    async def opened_stream(self, network: Any, stream: Any) -> None:
        pass

    async def closed_stream(self, network: Any, stream: Any) -> None:
        pass

    async def listen(self, network: Any, multiaddr: Any) -> None:
        pass

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        pass


async def _receive_one(messages: MessageStream) -> Message:
    while (batch := await messages.receive()) is not None:
        if batch:
            return batch[0]
    raise StreamBroken("closed before answering")


async def _read_frame(stream: Libp2pByteStream, frames: FrameDecoder) -> bytes:
    while data := await stream.read(65536):
        if done := frames.feed(data):
            return done[0]
    raise StreamBroken("closed before sending a frame")


async def _answer(messages: MessageStream, reply: Message) -> None:
    try:
        with trio.move_on_after(1):
            await messages.send(reply)
            await messages.close()
    except (StreamBroken, ProtocolError):
        pass


async def _reset(stream: Any) -> None:
    with suppress(Exception):  # already gone
        await stream.reset()
