"""Streams far larger than yamux's window go through both ways, many at once, with window
updates sent as go-yamux sends them (once half the window is read, not after every read)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import trio

from node.p2p.streams import Libp2pByteStream
from tests.integration.test_multistream import LISTEN, member

PROTOCOL = "/bitinglip/test/digest/1"
ECHO = "/bitinglip/test/echo/1"
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


async def echo_back(stream: Libp2pByteStream) -> None:
    while chunk := await stream.read(65536):
        await stream.write(chunk)
    await stream.close()


async def test_small_messages_send_no_window_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call's few hundred bytes each way are far from half the window: no update is due,
    and none is sent (py-libp2p's own rule sent one after every read)."""
    from libp2p.stream_muxer.yamux.yamux import YamuxStream

    server, client = member(), member()
    async with server.running(LISTEN, []), client.running(LISTEN, [server.addrs()[0]]):
        server.set_handler(ECHO, echo_back)
        updates: list[int] = []
        send = YamuxStream.send_window_update

        async def counted(self: Any, increment: int, skip_lock: bool = False) -> None:
            updates.append(increment)
            await send(self, increment, skip_lock)

        monkeypatch.setattr(YamuxStream, "send_window_update", counted)
        stream = await client.open_stream(server.peer_id, server.addrs(), ECHO)
        with trio.fail_after(30):
            for i in range(200):
                message = f"call {i} ".encode() * 20
                await stream.write(message)
                answer = b""
                while len(answer) < len(message):
                    answer += await stream.read(65536)
                assert answer == message
        await stream.close()
        assert updates == []
