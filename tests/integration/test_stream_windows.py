"""Streams far larger than yamux's window go through both ways, many at once, with window
updates sent as go-yamux sends them (once half the window is read, not after every read)."""

from __future__ import annotations

import hashlib
import os

import trio

from node.p2p.host import YAMUX_RELEASE_ON_READ
from node.p2p.streams import Libp2pByteStream
from tests.integration.test_multistream import LISTEN, member

PROTOCOL = "/bitinglip/test/digest/1"
SIZE = 3 << 20  # 3 MiB: twelve of yamux's 256 KiB windows


async def digest_back(stream: Libp2pByteStream) -> None:
    """Read SIZE bytes, answer their digest followed by the same bytes again."""
    hashed, data = hashlib.sha256(), bytearray()
    while len(data) < SIZE:
        chunk = await stream.read(65536)
        assert chunk, "the stream ended early"
        data += chunk
    hashed.update(data)
    await stream.write(hashed.digest() + bytes(data))
    await stream.close()


async def test_large_streams_both_ways_with_lazy_window_updates() -> None:
    server, client = member(), member()
    async with server.running(LISTEN, []), client.running(LISTEN, [server.addrs()[0]]):
        assert os.environ[YAMUX_RELEASE_ON_READ] == "0"
        server.set_handler(PROTOCOL, digest_back)

        async def one(seed: int) -> None:
            payload = hashlib.shake_256(bytes([seed])).digest(SIZE)
            stream = await client.open_stream(server.peer_id, server.addrs(), PROTOCOL)
            await stream.write(payload)
            answer = bytearray()
            while chunk := await stream.read(65536):
                answer += chunk
            assert bytes(answer[:32]) == hashlib.sha256(payload).digest()
            assert bytes(answer[32:]) == payload

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for seed in range(4):
                    nursery.start_soon(one, seed)
