"""Hostile peers against real processes: a stranger, and an admitted peer sending garbage
on the RPC stream, other peers' certificates, forged and overwriting DHT records. The node
and gateway must keep serving."""

from __future__ import annotations

import contextlib
import sys
import time

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p.kad_dht.pb.kademlia_pb2 import Record
from libp2p.peer.id import ID as PeerID

import keys
from keys import Membership
from keys.files import raw_public
from node.p2p.host import PeerHost as Peer
from node.p2p.streams import Libp2pByteStream
from protocols import (
    RPC_PROTOCOL,
    Certificate,
    Hardware,
    Hello,
    Load,
    ModelInfo,
    NodeRecord,
    Request,
    encode,
    issue_certificate,
    node_key,
    peer_id_of,
    sign_record,
    verify_record,
)
from tests.integration.conftest import LocalSwarmFixture


async def read_all(stream: Libp2pByteStream) -> bytes:
    data = b""
    with trio.move_on_after(5):
        while chunk := await stream.read(4096):
            data += chunk
    return data


def forged(key: Ed25519PrivateKey, peer: str, operator: Ed25519PrivateKey) -> bytes:
    now = time.time()
    record = NodeRecord(
        peer_id=peer,
        public_key=raw_public(key),
        role="node",
        version="evil",
        addrs=[],
        hardware=Hardware("cuda", "fake", "VRAM", 1 << 40, 1 << 40),
        models=[ModelInfo("echo", "text-generation", "none", 1, 64, "ready")],
        load=Load(0, 0, 64, 1e6, 1 << 40),
        seq=int(now * 1000) + 10**9,
        issued_at=now,
        ttl=3600,
    )
    cert = issue_certificate(operator, Certificate(peer, "node", now, now + 3600))
    return sign_record(key, record, cert)


def watch_lookups(peer: Peer, monkeypatch: pytest.MonkeyPatch) -> set[bytes]:
    """Keys other peers ask ``peer``'s DHT store for, recorded as they come."""
    store = peer.dht.value_store
    asked: set[bytes] = set()
    original = store.get

    def get(key: bytes) -> Record | None:
        asked.add(key)
        return original(key)

    monkeypatch.setattr(store, "get", get)
    return asked


async def stored_at(peer: Peer, holder: str, key: str) -> bytes | None:
    """What ``holder`` keeps in its own DHT store under ``key``, asked directly."""
    value = await peer.dht.value_store._get_from_peer(PeerID.from_base58(holder), key.encode())
    return value if isinstance(value, bytes) else None


def operator_public(swarm: LocalSwarmFixture) -> bytes:
    return keys.operator_public(swarm.data_dir)


async def nodes_seen(url: str) -> int:
    async with httpx.AsyncClient() as client:
        return int((await client.get(f"{url}/health")).json()["nodes"])


async def routable(url: str) -> list[str]:
    async with httpx.AsyncClient() as client:
        return list((await client.get(f"{url}/health")).json()["models"])


async def test_hostile_peer_cannot_disrupt_or_impersonate(
    swarm: LocalSwarmFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = swarm.start_gateway()
    boot = str(gateway["addrs"][0])  # type: ignore[index]
    swarm.start_node("node-0", [boot], ["echo"])
    swarm.wait_ready(["node-0"])
    url, token, victim = swarm.url(), swarm.token(), swarm.peer_id("node-0")
    with trio.fail_after(60):
        while await nodes_seen(url) != 1 or await routable(url) != ["echo"]:
            await trio.sleep(0.2)

    # A stranger, admitted by another operator: nothing it opens is served.
    rogue_operator = Ed25519PrivateKey.generate()
    stranger_key = Ed25519PrivateKey.generate()
    stranger_id = peer_id_of(raw_public(stranger_key))
    stranger = Peer(
        stranger_key,
        operator_public(swarm),
        Membership(issue_certificate(rogue_operator, Certificate(stranger_id, "node", 0, 2e9))),
    )
    async with stranger.running(["/ip4/127.0.0.1/tcp/0"], []):
        answer = b""
        with contextlib.suppress(Exception):  # refused outright is fine too
            stream = await stranger.open_stream(victim, [swarm.addr("node-0")], RPC_PROTOCOL)
            hello = encode(Hello(stranger.certificate)) + encode(Request(1, "status", {}))
            await stream.write(hello)
            answer = await read_all(stream)
        assert answer == b""
        with trio.fail_after(10):  # and the node hangs up on it
            while victim in {str(p) for p in stranger.host.get_connected_peers()}:
                await trio.sleep(0.05)

    # An admitted node turned hostile (its key stolen, say).
    intruder = Ed25519PrivateKey.generate()
    intruder_id = peer_id_of(raw_public(intruder))
    admitted = Membership(keys.admit(swarm.data_dir, intruder_id, "node"))
    peer = Peer(intruder, operator_public(swarm), admitted)
    async with peer.running(["/ip4/127.0.0.1/tcp/0"], [boot]):
        addrs = [swarm.addr("node-0")]

        # Garbage and an oversized frame: that stream is closed with an error.
        for garbage in (b"\x00\x00\x00\x04junk", b"\xff\xff\xff\xff" + b"x" * 100):
            stream = await peer.open_stream(victim, addrs, RPC_PROTOCOL)
            await stream.write(garbage)
            assert b"BAD_REQUEST" in await read_all(stream)

        # A certificate from another operator is refused.
        stream = await peer.open_stream(victim, addrs, RPC_PROTOCOL)
        cert = issue_certificate(
            rogue_operator,
            Certificate(peer.peer_id, "gateway", time.time(), time.time() + 60),
        )
        await stream.write(encode(Hello(cert)) + encode(Request(1, "status", {})))
        assert b"UNAUTHORIZED" in await read_all(stream)

        # A genuine certificate, but the gateway's: replayed by another peer, it is refused.
        stolen = keys.certificate(swarm.data_dir / "peers" / "gateway", "gateway")
        stream = await peer.open_stream(victim, addrs, RPC_PROTOCOL)
        await stream.write(encode(Hello(stolen)) + encode(Request(1, "status", {})))
        refusal = await read_all(stream)
        assert b"UNAUTHORIZED" in refusal and b"issued to another peer" in refusal

        # Forged records: its own, and one claiming the victim's key. Honest peers refuse
        # to store them (the put may still succeed locally, under the intruder's rules).
        # Each is also offered straight to the gateway, so its refusal is certain to be
        # tried, not left to which peers the DHT happens to pick.
        gateway_id = swarm.peer_id("gateway")
        asked = watch_lookups(peer, monkeypatch)
        forgeries = {
            node_key(intruder_id): forged(intruder, intruder_id, rogue_operator),
            node_key(victim): forged(intruder, victim, rogue_operator),
        }
        for key, value in forgeries.items():
            with contextlib.suppress(Exception):  # refused outright is fine too
                await peer.put(key, value)
            await peer.dht.value_store._store_at_peer(
                PeerID.from_base58(gateway_id), key.encode(), value
            )

        # Read back from the gateway's own store: no forgery is there.
        own = await stored_at(peer, gateway_id, node_key(intruder_id))
        assert own is None
        theirs = await stored_at(peer, gateway_id, node_key(victim))
        assert theirs != forgeries[node_key(victim)]
        if theirs is not None:  # the victim's genuine record, if the gateway holds one
            record = verify_record(theirs, operator_public(swarm), time.time())
            assert record.peer_id == victim and record.version != "evil"

        # Wait until the gateway has looked the intruder up as a node (its discovery asks
        # the DHT, and the intruder answers with its forgery), then check routing.
        with trio.fail_after(60):
            while node_key(intruder_id).encode() not in asked:
                await trio.sleep(0.2)

        # The gateway still routes only to the real node, which still serves.
        async with httpx.AsyncClient(timeout=30) as client:
            for _ in range(3):
                reply = await client.post(
                    f"{url}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {token}"},
                    json={"model": "echo", "messages": [{"role": "user", "content": "ok?"}]},
                )
                assert reply.status_code == 200, reply.text
                assert reply.headers["x-bitinglip-node"] == victim
            models = await client.get(
                f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"}
            )
            peers = [p["peer_id"] for p in models.json()["data"][0]["peers"]]
            assert peers == [victim]
        assert await nodes_seen(url) == 1


async def test_a_revoked_node_is_dropped_by_the_swarm_within_seconds(
    swarm: LocalSwarmFixture,
) -> None:
    gateway = swarm.start_gateway()
    boot = str(gateway["addrs"][0])  # type: ignore[index]
    swarm.start_node("node-0", [boot], ["echo"])
    swarm.wait_ready(["node-0"])
    url, victim = swarm.url(), swarm.peer_id("node-0")
    with trio.fail_after(60):
        while await nodes_seen(url) != 1:
            await trio.sleep(0.2)

    command = [sys.executable, "-m", "node.cli", "keys", "revoke", victim]
    command += ["--data-dir", str(swarm.data_dir), "--bootstrap", boot]
    done = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert f"revoked {victim}" in done.stdout.decode()
    assert "told 1 peer(s)" in done.stdout.decode()

    # The gateway disconnects it and stops routing to it; it cannot come back.
    with trio.fail_after(15):
        while await nodes_seen(url) != 0:
            await trio.sleep(0.2)
    async with httpx.AsyncClient(timeout=30) as client:
        reply = await client.post(
            f"{url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {swarm.token()}"},
            json={"model": "echo", "messages": [{"role": "user", "content": "ok?"}]},
        )
    assert reply.status_code in (404, 503), reply.text
