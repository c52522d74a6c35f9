"""NAT traversal: circuit relay v2, and hole punching (DCUtR) to upgrade off the relay.

A node dials out to every gateway it finds (``node.p2p.gateways``), so a gateway routes
to a node behind a NAT over the connection the node opened. A relay is for the peers that
must reach a node and cannot ride such a connection: a gateway the node has not reached
yet (or cannot: no route to it), an operator's CLI. So:

* A relay (a gateway, or any peer with ``relay = true``) runs the hop service: it holds
  ``reservations`` slots, and cuts each relayed connection after ``circuit_seconds`` or
  ``circuit_bytes``. Its streams pass the gate (``node.p2p.gate``) like any other, so
  only swarm members may reserve or connect through it.
* A peer that is not publicly reachable (``reachability = "private"``, or ``"auto"`` and
  no relay could dial it back: ``node.p2p.dialback``) reserves a slot at relays
  (``node.p2p.relays``) and advertises ``/p2p/<relay>/p2p-circuit/p2p/<self>`` in place
  of its own addresses, which nobody could dial.
* A peer that cannot dial another directly dials it through a relay it names. Noise runs
  end to end over the relayed stream, so the relay sees ciphertext and cannot pose as
  either side: the dialer checks the peer id it meant, the gate checks the certificate.
* Then DCUtR tries a direct connection (the dialer initiates; both sides also retry on
  their own); calls use the relayed connection until a direct one verifies, and the
  relayed one is closed a while after.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Literal, Protocol, cast, get_args

import trio

from node.p2p import dialback
from node.p2p.dialback import ASK_TIMEOUT
from node.p2p.streams import Libp2pByteStream, StreamBroken
from protocols import RemoteProtocolError
from protocols.reachability import DIALBACK_PROTOCOL

logger = logging.getLogger(__name__)

Reachability = Literal["auto", "public", "private"]
REACHABILITIES: tuple[Reachability, ...] = get_args(Reachability)

CIRCUIT = "/p2p-circuit"
DIAL_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class RelaySettings:
    """How a peer takes part in NAT traversal (``[node]`` and ``[gateway]`` settings)."""

    serve: bool = False  # run the hop service for other members
    reachability: Reachability = "public"
    reservations: int = 128  # peers holding a slot here at once
    circuit_seconds: int = 3600  # a relayed connection lives this long at most (0: no cap)
    circuit_bytes: int = 1 << 30  # ... and carries this much at most (0: no cap)
    circuits_per_peer: int = 16  # relayed connections to one reserved peer at once

    def __post_init__(self) -> None:
        if self.reachability not in REACHABILITIES:
            raise ValueError(
                f"reachability must be one of {', '.join(REACHABILITIES)}, "
                f"not {self.reachability!r}"
            )
        for name in ("reservations", "circuits_per_peer"):
            if getattr(self, name) < 1:
                raise ValueError(f"relay {name} must be at least 1")
        for name in ("circuit_seconds", "circuit_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"relay {name} must not be negative")


class RelayConfig(Protocol):
    """The relay settings of a node's or a gateway's config (a node's also says whether it
    can be dialled: ``reachability``)."""

    relay: bool
    relay_reservations: int
    relay_circuit_seconds: int
    relay_circuit_bytes: int


def settings_of(config: RelayConfig, reachability: str = "public") -> RelaySettings:
    """``config``'s relay settings; ``ValueError`` saying which one is wrong."""
    return RelaySettings(
        serve=config.relay,
        reachability=cast(Reachability, reachability),
        reservations=config.relay_reservations,
        circuit_seconds=config.relay_circuit_seconds,
        circuit_bytes=config.relay_circuit_bytes,
    )


def is_circuit(addr: str) -> bool:
    return CIRCUIT in addr


def circuit_addr(relay: str, peer: str) -> str:
    """The address at which ``peer`` is reached through ``relay``. It names the relay by
    peer id alone: a dialer finds the relay as it finds any member, so the address holds
    wherever the relay moves and whichever of its addresses the dialer can use."""
    return f"/p2p/{relay}{CIRCUIT}/p2p/{peer}"


def relay_of(addr: str) -> str:
    """The relay's peer id in a circuit address; ``ValueError`` if it is not one."""
    head, sep, _ = addr.partition(CIRCUIT)
    relay = head.rsplit("/p2p/", 1)[-1] if "/p2p/" in head else ""
    if not sep or not relay or "/" in relay:
        raise ValueError(f"not a circuit address: {addr}")
    return relay


class NatTraversal:
    """The relay protocols on a libp2p host: the stop side always (a reserved peer is
    reached through it), the hop side where ``settings.serve``, and DCUtR."""

    def __init__(self, host: Any, settings: RelaySettings) -> None:
        from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
        from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
        from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
        from libp2p.relay.circuit_v2.resources import RelayLimits
        from libp2p.relay.circuit_v2.transport import CircuitV2Transport

        self.settings = settings
        self._host = host
        limits = RelayLimits(
            duration=settings.circuit_seconds,
            data=settings.circuit_bytes,
            max_circuit_conns=settings.circuits_per_peer,
            max_reservations=settings.reservations,
        )
        # Without the client role: py-libp2p's dialer would otherwise take a slot at the
        # relay before each connection it makes through it. Slots are for reached peers.
        roles = RelayRole.STOP | RelayRole.HOP if settings.serve else RelayRole.STOP
        config = RelayConfig(roles=roles, limits=limits)
        self._protocol = CircuitV2Protocol(host, limits=limits, allow_hop=settings.serve)
        self._transport = CircuitV2Transport(host, self._protocol, config)
        self._dcutr = DCUtRProtocol(host)
        self._answers = dialback.Answers()
        self.reserved: dict[str, float] = {}  # relay -> when its slot expires (unix time)
        self.reachable: bool | None = None  # what dial-backs said last ("auto"); None: none
        self.checked_at = -math.inf  # when they last said it (time.monotonic)
        self.circuits = 0  # connections we made through a relay
        self.hole_punches: dict[str, int] = {"direct": 0, "failed": 0}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the relay protocols until cancelled."""
        from libp2p.tools.anyio_service import background_trio_service

        async with (
            background_trio_service(self._protocol),
            background_trio_service(self._dcutr),
            trio.open_nursery() as nursery,
        ):
            self._nursery = nursery
            if self.settings.serve:
                self._host.set_stream_handler(DIALBACK_PROTOCOL, self._answer_dialback)
            task_status.started()
            await trio.sleep_forever()

    @property
    def private(self) -> bool:
        """Whether others cannot dial us: so configured, or so found out ("auto")."""
        if self.settings.reachability == "auto":
            return self.reachable is False
        return self.settings.reachability == "private"

    async def _answer_dialback(self, stream: Any) -> None:
        wrapped = Libp2pByteStream(stream)
        try:
            # Through a relay, the address seen is the relay's: nothing to try.
            relayed = _is_relayed(stream.muxed_conn)
            address = None if relayed else stream.get_remote_address()
            with trio.fail_after(ASK_TIMEOUT):
                await self._answers.answer(
                    wrapped, wrapped.remote_peer, address[0] if address else None
                )
        except (RemoteProtocolError, StreamBroken, trio.TooSlowError) as exc:
            logger.debug("dial-back for %s failed: %r", wrapped.remote_peer[-8:], exc)
        except Exception:  # a handler's exception would end the process: log, go on
            logger.exception("dial-back for %s failed", wrapped.remote_peer[-8:])
        finally:
            await wrapped.close()

    async def check(self, relay: str, addrs: list[str]) -> list[str] | None:
        """Which of our ``addrs`` ``relay`` can open a connection to; ``None`` if it did
        not say."""
        from libp2p.peer.id import ID

        try:
            with trio.fail_after(ASK_TIMEOUT):
                stream = await self._host.new_stream(ID.from_base58(relay), [DIALBACK_PROTOCOL])
                wrapped = Libp2pByteStream(stream)
                try:
                    return await dialback.ask(wrapped, addrs)
                finally:
                    await wrapped.close()
        except Exception as exc:  # not a relay, gone, or it broke the protocol
            logger.debug("no dial-back from %s: %r", relay[-8:], exc)
            return None

    def addrs(self) -> list[str]:
        """Our circuit addresses: one for each relay that holds a slot for us now."""
        me = str(self._host.get_id())
        return [circuit_addr(relay, me) for relay in sorted(self.reserved)]

    async def reserve(self, relay: str) -> bool:
        """Take (or renew) a slot at ``relay``, a connected member; whether it gave one.

        The caller renews (``node.p2p.relays``), so this takes py-libp2p's reservation
        exchange without its refresher, which would go on renewing slots given up."""
        from libp2p.peer.id import ID
        from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID

        relay_id = ID.from_base58(relay)
        try:
            with trio.fail_after(DIAL_TIMEOUT):
                stream = await self._host.new_stream(relay_id, [PROTOCOL_ID])
                try:
                    taken = await self._transport._make_reservation(stream, relay_id)
                finally:
                    await stream.close()
        except Exception as exc:  # not a relay, or gone: the caller tries others
            logger.debug("no reservation at %s: %r", relay, exc)
            taken = False
        # py-libp2p keeps the expiry the relay granted only there.
        expiry = self._transport._reservations.get(relay_id) if taken else None
        if not expiry:
            self.release(relay)
            return False
        self.reserved[relay] = float(expiry)
        return True

    def release(self, relay: str) -> None:
        """Stop counting on a slot at ``relay`` (it lapses there by itself)."""
        from libp2p.peer.id import ID

        self.reserved.pop(relay, None)
        self._transport._reservations.pop(ID.from_base58(relay), None)
        self._transport._reservation_proofs.pop(ID.from_base58(relay), None)

    async def dial(self, peer: str, circuits: list[str]) -> None:
        """Connect to ``peer`` through the first relay in ``circuits`` that carries us there,
        then try for a direct connection in the background; the error of the last attempt
        if none does."""
        import multiaddr
        from libp2p.peer.id import ID

        last: Exception = ConnectionError(f"no circuit address for {peer}")
        for addr in circuits:
            if not addr.endswith(f"{CIRCUIT}/p2p/{peer}"):  # a circuit to someone else
                continue
            try:
                relay = ID.from_base58(relay_of(addr))
                if not self._host.get_network().get_connections(relay):
                    with trio.fail_after(DIAL_TIMEOUT):
                        await self._host.get_network().dial_peer(relay)
                with trio.fail_after(DIAL_TIMEOUT):
                    await self._transport.dial(multiaddr.Multiaddr(addr))
            except Exception as exc:
                logger.debug("no circuit to %s via %s: %r", peer[-8:], addr, exc)
                last = exc
                continue
            logger.info("connected to %s through relay %s", peer[-8:], relay_of(addr)[-8:])
            self.circuits += 1
            if self._nursery is not None:
                self._nursery.start_soon(self._upgrade, ID.from_base58(peer))
            return
        raise last

    async def _upgrade(self, peer: Any) -> None:
        """Try for a direct connection to a peer we reach through a relay (DCUtR)."""
        shown = str(peer)[-8:]
        try:
            direct = await self._dcutr.initiate_hole_punch(peer)
        except Exception as exc:  # the relayed connection went away, or the peer broke it
            logger.info("hole punch to %s failed (%r); calls stay on the relay", shown, exc)
            direct = False
        self.hole_punches["direct" if direct else "failed"] += 1
        if direct:
            logger.info("direct connection to %s: the relay is let go", shown)
        else:
            logger.info("no direct connection to %s; calls stay on the relay", shown)

    def relayed(self, peer: str) -> bool | None:
        """Whether every connection to ``peer`` runs through a relay; ``None``: none."""
        from libp2p.peer.id import ID

        conns = self._host.get_network().get_connections(ID.from_base58(peer))
        if not conns:
            return None
        return all(_is_relayed(conn) for conn in conns)


def _is_relayed(conn: Any) -> bool:
    try:
        return any(is_circuit(str(a)) for a in conn.get_transport_addresses())
    except Exception:  # an address-less connection is a plain socket
        return False
