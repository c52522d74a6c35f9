"""What one peer may hold on an RPC server: a small Hello in time, a few streams, a bounded
number of calls; past a limit it is refused, and other peers are served as before."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from node.p2p.rpc_client import RemoteError, RpcClient
from node.p2p.rpc_server import (
    HELLO_TIMEOUT,
    MAX_CALLS_PER_PEER,
    MAX_CALLS_PER_STREAM,
    MAX_STREAMS_PER_PEER,
    Caller,
    Emit,
    RpcServer,
)
from node.p2p.streams import TrioByteStream
from protocols import HELLO_MAX_FRAME, ErrorCode, Hello, Request, encode

CERT = b"cert"


def authorize(cert: bytes, peer: str) -> Caller:
    return Caller(peer, "gateway")


class Handlers:
    """``status`` answers at once; ``hold`` runs until ``release`` is set."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.running = 0

    async def status(self, params: dict[str, Any], caller: Caller, emit: Emit) -> dict[str, Any]:
        return {"ok": True}

    async def hold(self, params: dict[str, Any], caller: Caller, emit: Emit) -> dict[str, Any]:
        self.running += 1
        await self.release.wait()
        return {}

    def table(self) -> dict[str, Any]:
        return {"status": self.status, "hold": self.hold}


async def replies(stream: trio.abc.Stream) -> bytes:
    """Everything the server sends until it closes the stream."""
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def open_client(nursery: trio.Nursery, server: RpcServer, peer: str) -> RpcClient:
    left, right = trio.testing.memory_stream_pair()
    nursery.start_soon(server.serve, TrioByteStream(right), peer)
    client = RpcClient(TrioByteStream(left), CERT)
    await nursery.start(client.run)
    return client


async def test_a_large_first_frame_is_refused_from_its_header() -> None:
    server = RpcServer(Handlers().table(), authorize)
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve, TrioByteStream(right), "stranger")
        # Announces a 1 MiB frame before any Hello, and sends only its first bytes.
        await left.send_all((1 << 20).to_bytes(4, "big") + b"\x00" * 1024)
        with trio.fail_after(5):
            reply = await replies(left)
    assert b"BAD_REQUEST" in reply and f"exceeds {HELLO_MAX_FRAME}".encode() in reply


async def test_after_hello_frames_may_be_as_large_as_the_cap() -> None:
    server = RpcServer(Handlers().table(), authorize)
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve, TrioByteStream(right), "peer")
        big = Request(1, "status", {"pad": b"x" * (1 << 20)})
        # Hello and a large request in one write: only the Hello is held to the small cap.
        await left.send_all(encode(Hello(CERT)) + encode(big))
        with trio.fail_after(5):
            reply = await left.receive_some(65536)
        assert b"end" in reply and b"ok" in reply
        nursery.cancel_scope.cancel()


async def test_a_stream_that_never_says_hello_is_closed(autojump_clock: Any) -> None:
    server = RpcServer(Handlers().table(), authorize)
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve, TrioByteStream(right), "silent")
        started = trio.current_time()
        with trio.fail_after(10 * HELLO_TIMEOUT):
            reply = await replies(left)
    assert b"UNAUTHORIZED" in reply and b"no hello in time" in reply
    assert trio.current_time() - started == pytest.approx(HELLO_TIMEOUT)


async def test_streams_past_the_limit_are_refused_for_that_peer_only() -> None:
    server = RpcServer(Handlers().table(), authorize)
    async with trio.open_nursery() as nursery:
        for _ in range(MAX_STREAMS_PER_PEER):
            client = await open_client(nursery, server, "greedy")
            assert await client.call("status", {}) == {"ok": True}
        extra = await open_client(nursery, server, "greedy")
        with trio.fail_after(5):
            while not extra.closed:
                await trio.sleep(0.001)
        assert extra.closed_reason == "OVERLOADED: too many streams from this peer"
        other = await open_client(nursery, server, "polite")
        assert await other.call("status", {}) == {"ok": True}
        nursery.cancel_scope.cancel()


async def test_calls_past_the_limits_are_overloaded_for_that_peer_only() -> None:
    handlers = Handlers()
    server = RpcServer(handlers.table(), authorize)
    async with trio.open_nursery() as nursery:
        first = await open_client(nursery, server, "greedy")
        for _ in range(MAX_CALLS_PER_STREAM):
            nursery.start_soon(first.call, "hold", {})
        with trio.fail_after(5):
            while handlers.running < MAX_CALLS_PER_STREAM:
                await trio.sleep(0.001)
        with pytest.raises(RemoteError, match="too many calls on stream"):
            await first.call("status", {})
        # More streams of the same peer: the peer's own limit holds across them.
        started = MAX_CALLS_PER_STREAM
        while started < MAX_CALLS_PER_PEER:
            client = await open_client(nursery, server, "greedy")
            for _ in range(min(MAX_CALLS_PER_STREAM, MAX_CALLS_PER_PEER - started)):
                nursery.start_soon(client.call, "hold", {})
                started += 1
        with trio.fail_after(5):
            while handlers.running < MAX_CALLS_PER_PEER:
                await trio.sleep(0.001)
        last = await open_client(nursery, server, "greedy")
        with pytest.raises(RemoteError) as refused:
            await last.call("status", {})
        assert refused.value.code is ErrorCode.OVERLOADED
        assert refused.value.message == "too many calls from peer"
        other = await open_client(nursery, server, "polite")
        assert await other.call("status", {}) == {"ok": True}
        # Once its calls end, the peer may call again.
        handlers.release.set()
        with trio.fail_after(5):
            while True:
                try:
                    assert await last.call("status", {}) == {"ok": True}
                    break
                except RemoteError:
                    await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
