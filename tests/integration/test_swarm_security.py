"""Hostile peers against real processes: garbage on the RPC stream, unadmitted callers,
forged and overwriting DHT records. The node and gateway must keep serving."""

from __future__ import annotations

import contextlib
import time

import httpx
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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
        hardware=Hardware("cuda", "fake", 1 << 40, 1 << 40),
        models=[ModelInfo("echo", "text-generation", "none", 1, 64, "ready")],
        load=Load(0, 0, 64, 1e6, 1 << 40),
        seq=int(now * 1000) + 10**9,
        issued_at=now,
        ttl=3600,
    )
    cert = issue_certificate(operator, Certificate(peer, "node", now, now + 3600))
    return sign_record(key, record, cert)


async def nodes_seen(url: str) -> int:
    async with httpx.AsyncClient() as client:
        return int((await client.get(f"{url}/health")).json()["nodes"])


async def test_hostile_peer_cannot_disrupt_or_impersonate(swarm: LocalSwarmFixture) -> None:
    gateway = swarm.start_gateway()
    boot = str(gateway["addrs"][0])  # type: ignore[index]
    swarm.start_node("node-0", [boot], ["echo"])
    swarm.wait_ready(["node-0"])
    url, token, victim = swarm.url(), swarm.token(), swarm.peer_id("node-0")
    with trio.fail_after(30):
        while await nodes_seen(url) != 1:
            await trio.sleep(0.2)

    intruder = Ed25519PrivateKey.generate()
    rogue_operator = Ed25519PrivateKey.generate()
    peer = Peer(intruder, raw_public(rogue_operator))
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

        # Forged records: its own, and one claiming the victim's key. Honest peers refuse
        # to store them (the put may still succeed locally, under the intruder's rules).
        intruder_id = peer_id_of(raw_public(intruder))
        for key, value in (
            (node_key(intruder_id), forged(intruder, intruder_id, rogue_operator)),
            (node_key(victim), forged(intruder, victim, rogue_operator)),
        ):
            with contextlib.suppress(Exception):  # refused outright is fine too
                await peer.put(key, value)
        await trio.sleep(3)  # longer than the gateway's discovery interval

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
