"""Circuit relay v2 and DCUtR between real libp2p hosts on 127.0.0.1, in this process.

A private peer takes a slot at a relay and advertises only its circuit address; a peer
that never dialled it reaches it through the relay, is answered over the relayed
connection, and DCUtR then upgrades to a direct one (127.0.0.1 is reachable both ways:
this is the upgrade where nothing stands in the way; ``test_nat`` puts a NAT in it).
The relay serves members only, and its slots are capped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys import Membership
from node.p2p.admission import serve_rpc
from node.p2p.host import PeerHost
from node.p2p.relay import RelaySettings, circuit_addr
from node.p2p.relays import find_out, reserve
from node.p2p.rpc_server import Caller, Emit
from tests.integration.test_swarm_admission import (
    LISTEN,
    OPERATOR_PUBLIC,
    certificate,
    status_from,
    until,
)

RELAY = RelaySettings(serve=True, reservations=2)
PRIVATE = RelaySettings(reachability="private")
PUBLIC = RelaySettings()


@asynccontextmanager
async def peer(
    relay: RelaySettings = PUBLIC,
    bootstrap: tuple[PeerHost, ...] = (),
    role: str = "node",
    cert: bytes | None = None,
) -> AsyncIterator[PeerHost]:
    """A running member answering ``status`` with who called and over what."""
    key = Ed25519PrivateKey.generate()
    host = PeerHost(key, OPERATOR_PUBLIC, Membership(cert or certificate(key, role)), None, relay)

    async def status(params: dict[str, Any], caller: Caller, emit: Emit) -> dict[str, Any]:
        return {"caller": caller.peer_id, "relayed": host.nat.relayed(caller.peer_id)}

    async with host.running(LISTEN, [b.addrs()[0] for b in bootstrap]):
        serve_rpc(host, {"status": status})
        yield host


def known(host: PeerHost, other: PeerHost) -> None:
    """Put ``other``'s addresses in ``host``'s peerstore, as a DHT lookup would."""
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    info = info_from_p2p_addr(Multiaddr(other.addrs()[0]))
    host.host.get_peerstore().add_addrs(info.peer_id, info.addrs, 3600)


def _stranger_id() -> str:
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    return ID.from_pubkey(create_new_key_pair().public_key).to_base58()


async def provided(relay: PeerHost) -> None:
    """``relay`` provides the relays key, as its advertiser does."""
    from protocols import RELAYS_KEY

    await relay.provide(RELAYS_KEY)


async def test_a_private_peer_is_reached_through_a_relay_then_directly() -> None:
    async with peer(RELAY, role="gateway") as relay, peer(PRIVATE, (relay,)) as hidden:
        await provided(relay)
        assert await reserve(hidden) == {relay.peer_id}
        # It advertises the relay's circuit to it, and nothing else.
        assert hidden.addrs() == [circuit_addr(relay.peer_id, hidden.peer_id)]
        assert hidden.direct_addrs() and hidden.direct_addrs() != hidden.addrs()
        # A peer that knows where the relay is, but has not joined: nothing it could learn
        # from the DHT takes it to the private peer, only the circuit address.
        async with peer() as caller:
            known(caller, relay)
            answer = await status_from(caller, hidden)
            # Answered, the caller admitted end to end, over a connection through the relay.
            assert answer is not None and answer["caller"] == caller.peer_id
            assert caller.nat.circuits == 1
            # DCUtR: a direct connection follows (127.0.0.1 is reachable both ways), and
            # the relayed one is let go; calls keep working.
            await until(lambda: caller.nat.hole_punches["direct"] == 1, timeout=30)
            assert caller.nat.relayed(hidden.peer_id) is False
            assert await status_from(caller, hidden) == {"caller": caller.peer_id, "relayed": False}


async def test_a_relay_serves_members_only_and_caps_its_slots() -> None:
    async with (
        peer(RELAY, role="gateway") as relay,
        peer(PRIVATE, (relay,)) as first,
        peer(PRIVATE, (relay,)) as second,
        peer(PRIVATE, (relay,)) as third,
    ):
        assert await first.nat.reserve(relay.peer_id)
        assert await second.nat.reserve(relay.peer_id)
        assert not await third.nat.reserve(relay.peer_id)  # two slots, both taken
        assert await first.nat.reserve(relay.peer_id)  # a holder renews its own
        # A peer that does not relay (``relay = false``) holds no slots for anyone.
        assert await third.connect(second.direct_addrs()[0])
        assert not await third.nat.reserve(second.peer_id)
        assert await third.nat.check(second.peer_id, third.direct_addrs()) is None
        # A peer whose certificate is not its own is held at the gate, then cut off: it
        # asks for a slot at once, while it is still connected, and gets none.
        key = Ed25519PrivateKey.generate()
        stranger = PeerHost(
            key, OPERATOR_PUBLIC, Membership(certificate(Ed25519PrivateKey.generate(), "node"))
        )
        async with stranger.running(LISTEN, []):
            await stranger.connect(relay.addrs()[0])
            assert not await stranger.nat.reserve(relay.peer_id)
            assert relay.admission.member(stranger.peer_id) is None


async def test_an_auto_peer_that_a_relay_can_dial_back_stays_public() -> None:
    auto = RelaySettings(reachability="auto")
    async with peer(RELAY, role="gateway") as relay, peer(auto, (relay,)) as reachable:
        await provided(relay)
        assert await reserve(reachable) == set()  # dialled back at 127.0.0.1: no slots
        assert reachable.nat.reachable is True and not reachable.nat.private
        assert reachable.addrs() == reachable.direct_addrs()
        checked = reachable.nat.checked_at
        assert await reserve(reachable) == set()  # the answer holds: nobody is asked again
        assert reachable.nat.checked_at == checked
        # A peer that is not a relay answers no dial-back: nothing is concluded from it.
        async with peer(bootstrap=(relay,)) as plain:
            assert not await reachable.connect_known(_stranger_id())  # no address: no dial
            assert await reachable.connect(plain.addrs()[0])
            reachable.nat.reachable = None
            await find_out(reachable, {plain.peer_id})
            assert reachable.nat.reachable is None


async def test_a_relay_cannot_hand_a_caller_to_another_peer_than_the_one_it_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from libp2p.peer.id import ID

    async with (
        peer(RELAY, role="gateway") as relay,
        peer(PRIVATE, (relay,)) as hidden,
        peer(PRIVATE, (relay,)) as other,
    ):
        assert await hidden.nat.reserve(relay.peer_id)
        assert await other.nat.reserve(relay.peer_id)
        # A dishonest relay: asked for ``hidden``, it connects the caller to ``other``.
        protocol = relay.nat._protocol
        honest = protocol._handle_connect

        async def misroute(stream: Any, message: Any) -> None:
            message.peer.id = ID.from_base58(other.peer_id).to_bytes()
            await honest(stream, message)

        monkeypatch.setattr(protocol, "_handle_connect", misroute)
        async with peer() as caller:
            known(caller, relay)
            # A circuit address that leads to another peer is not even tried.
            with pytest.raises(ConnectionError, match="no circuit address"):
                await caller.nat.dial(hidden.peer_id, [circuit_addr(relay.peer_id, other.peer_id)])
            # Noise, end to end, finds the wrong key at the other end: the call fails, and
            # the relayed connection is torn down. (The caller may meet either peer later,
            # directly, each as itself: the relay passed on their signed addresses.)
            assert await status_from(caller, hidden) is None
            assert caller.nat.circuits == 0
            assert not any(caller.nat.relayed(str(p)) for p in caller.host.get_connected_peers())


async def test_a_private_peer_lets_go_of_a_relay_that_is_gone() -> None:
    async with peer(RELAY, role="gateway") as first, peer(PRIVATE, (first,)) as hidden:
        await provided(first)
        assert await reserve(hidden) == {first.peer_id}
        async with peer(RELAY, (first,), role="gateway") as second:
            await hidden.connect(second.addrs()[0])
            assert await hidden.nat.reserve(second.peer_id)
            assert sorted(hidden.addrs()) == sorted(
                circuit_addr(r.peer_id, hidden.peer_id) for r in (first, second)
            )
        # The second relay is gone: the next round renews the first alone.
        assert await reserve(hidden) == {first.peer_id}
        assert hidden.addrs() == [circuit_addr(first.peer_id, hidden.peer_id)]
