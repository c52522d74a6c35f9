"""Real libp2p hosts on 127.0.0.1, in this process: who may take part in the swarm.

A stranger (another operator's certificate, or none at all) is disconnected and kept out
of the routing table; a revoked member is disconnected everywhere, the list passing from
peer to peer; an expired certificate ends its connections; the DHT keeps only our
namespace, within quotas.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p.peer.id import ID

from keys import Membership
from keys.files import raw_public
from node.p2p import admission as admission_module
from node.p2p.admission import serve_rpc
from node.p2p.dht import RECORDS_PER_PEER
from node.p2p.gate import ADMIT_TIMEOUT, SWEEP_INTERVAL
from node.p2p.host import PeerHost, _make_host
from node.p2p.rpc_client import RpcClient
from node.p2p.rpc_server import Caller, Emit
from protocols import (
    ADMIT_PROTOCOL,
    RPC_PROTOCOL,
    Certificate,
    Hello,
    Request,
    Revocations,
    encode,
    issue_certificate,
    issue_revocations,
    node_key,
    peer_id_of,
    sign_record,
)
from tests.swarm_fakes import node_record

OPERATOR = Ed25519PrivateKey.generate()
OPERATOR_PUBLIC = raw_public(OPERATOR)
LISTEN = ["/ip4/127.0.0.1/tcp/0"]
# Admission, its deadline and the sweep take seconds at most; a loaded machine gets slack.
SOON = ADMIT_TIMEOUT + 10


def certificate(key: Ed25519PrivateKey, role: str, lifetime: float = 3600.0) -> bytes:
    peer = peer_id_of(raw_public(key))
    now = time.time()
    return issue_certificate(OPERATOR, Certificate(peer, role, now, now + lifetime))


@asynccontextmanager
async def peer(
    role: str = "node",
    bootstrap: tuple[PeerHost, ...] = (),
    cert: bytes | None = None,
    key: Ed25519PrivateKey | None = None,
) -> AsyncIterator[PeerHost]:
    """A running host admitted by ``OPERATOR`` (or holding ``cert``), answering ``status``."""
    key = key or Ed25519PrivateKey.generate()
    host = PeerHost(key, OPERATOR_PUBLIC, Membership(cert or certificate(key, role)))

    async def status(params: dict[str, Any], caller: Caller, emit: Emit) -> dict[str, Any]:
        return {"caller": caller.peer_id}

    async with host.running(LISTEN, [b.addrs()[0] for b in bootstrap]):
        serve_rpc(host, {"status": status})
        yield host


def connected(host: PeerHost) -> set[str]:
    return {str(p) for p in host.host.get_connected_peers()}


def in_table(host: PeerHost) -> set[str]:
    return {str(p) for p in host.dht.routing_table.get_peer_ids()}


async def status_from(caller: PeerHost, callee: PeerHost) -> Any:
    """What ``callee`` answers to ``caller``'s ``status`` call; ``None`` if nothing."""
    with suppress(Exception), trio.fail_after(SOON):
        stream = await caller.open_stream(callee.peer_id, callee.addrs(), RPC_PROTOCOL)
        async with RpcClient(stream, caller.certificate).running() as client:
            return await client.call("status", {}, timeout=5)
    return None


async def until(condition: Any, timeout: float = SOON) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.05)


async def test_a_stranger_is_disconnected_and_kept_out_of_the_routing_table() -> None:
    rogue = Ed25519PrivateKey.generate()
    stranger_key = Ed25519PrivateKey.generate()
    stranger_id = peer_id_of(raw_public(stranger_key))
    foreign = issue_certificate(rogue, Certificate(stranger_id, "node", 0, 2e9))
    async with peer() as member, peer(cert=foreign, key=stranger_key) as stranger:
        # It dials the member and speaks every protocol it can before being cut off.
        await stranger.connect(member.addrs()[0])
        stored = await _try_store(stranger, member, "/bitinglip/node/x", b"junk")
        answer = await _raw_status(stranger, member)
        await until(lambda: member.peer_id not in connected(stranger))
        assert stranger.peer_id not in in_table(member)
        assert stranger.peer_id not in member.known_peers()
        assert member.admission.member(stranger.peer_id) is None
        assert not stored and answer == b""
        assert member.dht.value_store.store == {}
        # A member is served as before.
        async with peer(bootstrap=(member,)) as friend:
            assert await status_from(friend, member) == {"caller": friend.peer_id}
            assert friend.peer_id in in_table(member)


async def test_a_peer_that_never_presents_a_certificate_is_disconnected() -> None:
    silent = _make_host(Ed25519PrivateKey.generate())  # plain py-libp2p: no admission at all
    async with peer() as member, silent.run(listen_addrs=[]):
        from libp2p.peer.peerinfo import info_from_p2p_addr
        from multiaddr import Multiaddr

        await silent.connect(info_from_p2p_addr(Multiaddr(member.addrs()[0])))
        silent_id = str(silent.get_id())
        assert silent_id in connected(member)
        await until(lambda: silent_id not in connected(member))
        assert silent_id not in in_table(member)


async def test_a_broken_admission_exchange_does_not_cut_off_a_member() -> None:
    """A member that gives up on one exchange (it found us too slow) keeps its connections:
    closing them all made a busy swarm drop and redial its members over and over."""
    async with peer() as member, peer(bootstrap=(member,)) as other:
        await until(lambda: member.admission.member(other.peer_id) is not None)
        stream = await other.host.new_stream(ID.from_base58(member.peer_id), [ADMIT_PROTOCOL])
        await stream.close()  # no certificate sent on this one
        await trio.sleep(1)
        assert member.admission.member(other.peer_id) is not None
        assert other.peer_id in connected(member)
        assert await status_from(other, member) == {"caller": other.peer_id}


async def test_a_revoked_member_is_disconnected_by_every_peer_within_seconds() -> None:
    victim_key = Ed25519PrivateKey.generate()
    async with (
        peer() as hub,
        peer(key=victim_key, bootstrap=(hub,)) as victim,
        peer(bootstrap=(hub, victim)) as other,
        peer(role="operator", bootstrap=(hub,)) as operator,
    ):
        await until(lambda: victim.peer_id in connected(other))
        record = node_key(victim.peer_id)
        assert await _try_store(victim, hub, record, _record(victim.certificate, victim_key))
        blob = issue_revocations(OPERATOR, Revocations().adding(victim.peer_id, time.time()))
        # The operator tells only the hub; the hub passes the list on to the others.
        assert await operator.gate.push_revocations(hub.peer_id, blob)
        await until(lambda: victim.peer_id not in connected(hub) | connected(other), 10)
        assert other.admission.revoked(victim.peer_id)
        assert victim.peer_id not in in_table(hub) | in_table(other)
        assert record.encode() not in hub.dht.value_store.store  # nor is its record served
        # It is refused when it comes back, certificate and all.
        await victim.connect(hub.addrs()[0])
        await until(lambda: victim.peer_id not in connected(hub))
        assert await status_from(victim, hub) is None
        assert await status_from(other, hub) == {"caller": other.peer_id}


async def test_an_expired_certificate_ends_its_connections_and_a_renewed_one_keeps_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    offset = [0.0]
    clock = SimpleNamespace(time=lambda: time.time() + offset[0])
    monkeypatch.setattr(admission_module, "time", clock)
    short_key, kept_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    short_cert, kept_cert = certificate(short_key, "node", 60), certificate(kept_key, "node", 60)
    async with (
        peer() as member,
        peer(cert=short_cert, key=short_key, bootstrap=(member,)) as short,
        peer(cert=kept_cert, key=kept_key, bootstrap=(member,)) as kept,
    ):
        assert {short.peer_id, kept.peer_id} <= connected(member)
        # One renews its certificate before it expires and presents it again.
        kept.membership.certificate = certificate(kept_key, "node", lifetime=3600)
        await kept.gate.present_again()
        cert = member.admission.member(kept.peer_id)
        assert cert is not None and cert.expires_at > time.time() + 600
        offset[0] = 120.0  # both first certificates have expired
        await until(lambda: short.peer_id not in connected(member), 2 + 4 * SWEEP_INTERVAL)
        assert member.admission.member(short.peer_id) is None
        assert kept.peer_id in connected(member)
        assert await status_from(kept, member) == {"caller": kept.peer_id}


async def test_the_dht_keeps_only_our_namespace_and_a_quota_per_peer() -> None:
    owner_key = Ed25519PrivateKey.generate()
    async with (
        peer() as victim,
        peer(key=owner_key, bootstrap=(victim,)) as owner,
        peer(bootstrap=(victim,)) as hog,
    ):
        own = _record(owner.certificate, owner_key)
        assert await _try_store(owner, victim, node_key(owner.peer_id), own)
        # Keys outside /bitinglip/, some with a validator py-libp2p ships: none is stored.
        for foreign in ("/pk/anything", "/ipns/anything", "/other/x", "plain", "/bitinglip/x"):
            assert not await _try_store(hog, victim, foreign, b"junk")
        # A member holding many valid records (each needs its own key and certificate) may
        # still add only so many.
        stored = 0
        for _ in range(RECORDS_PER_PEER + 8):
            key = Ed25519PrivateKey.generate()
            peer_id = peer_id_of(raw_public(key))
            value = _record(certificate(key, "node"), key)
            stored += await _try_store(hog, victim, node_key(peer_id), value)
        assert stored == RECORDS_PER_PEER
        keys_held = set(victim.dht.value_store.store)
        assert node_key(owner.peer_id).encode() in keys_held
        assert len(keys_held) == RECORDS_PER_PEER + 1
        assert all(k.startswith(b"/bitinglip/node/") for k in keys_held)


async def _try_store(sender: PeerHost, holder: PeerHost, key: str, value: bytes) -> bool:
    """Whether ``holder`` accepted ``value`` under ``key`` from ``sender`` (a PUT_VALUE)."""
    try:
        with trio.fail_after(SOON):
            store = sender.dht.value_store
            ok = await store._store_at_peer(ID.from_base58(holder.peer_id), key.encode(), value)
    except Exception:
        return False
    return bool(ok) and key.encode() in holder.dht.value_store.store


async def _raw_status(sender: PeerHost, callee: PeerHost) -> bytes:
    """What ``callee`` says to a Hello and a ``status`` request, by bytes; ``b""`` if nothing."""
    data = b""
    with suppress(Exception):
        stream = await sender.host.new_stream(ID.from_base58(callee.peer_id), [RPC_PROTOCOL])
        await stream.write(encode(Hello(sender.certificate)) + encode(Request(1, "status", {})))
        with trio.move_on_after(SOON):
            while chunk := await stream.read(4096):
                data += chunk
    return data


def _record(cert: bytes, key: Ed25519PrivateKey) -> bytes:
    """A node record of ``key``'s peer, signed by it, carrying ``cert``."""
    return sign_record(key, node_record(key, models=[]), cert)
