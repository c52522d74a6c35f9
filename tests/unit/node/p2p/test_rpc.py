"""The RPC adapter over in-memory streams: calls, streaming, cancellation, garbage."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from node.p2p.rpc_client import ConnectionLost, RemoteError, RpcClient
from node.p2p.rpc_server import Caller, RpcError, RpcServer
from node.p2p.streams import TrioByteStream
from node.worker.handlers import NodeService
from node.worker.roster import Roster
from node.worker.runners.base import Delta
from node.worker.runners.echo import EchoRunner
from protocols import ErrorCode, GenerateParams, ModelInfo, encode_frame

CERT = b"gateway-cert"


def authorize(cert: bytes, peer: str) -> Caller:
    if cert == CERT:
        return Caller(peer, "gateway")
    if cert == b"client-cert":
        return Caller(peer, "client")
    raise RpcError(ErrorCode.UNAUTHORIZED, "not admitted")


def make_service(delay: float = 0.0, capacity: int = 2, max_queue: int = 2) -> NodeService:
    return NodeService(Roster.of({"echo": EchoRunner(delay=delay)}, capacity, max_queue), lambda: 0)


@asynccontextmanager
async def connected(
    service: NodeService, cert: bytes = CERT
) -> AsyncIterator[tuple[RpcClient, trio.Nursery]]:
    left, right = trio.testing.memory_stream_pair()
    server = RpcServer(service.handlers, authorize)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve, TrioByteStream(right), "peer-a")
        client = RpcClient(TrioByteStream(left), cert)
        await nursery.start(client.run)
        yield client, nursery
        nursery.cancel_scope.cancel()


def params(text: str, **kw: object) -> dict[str, object]:
    return GenerateParams(model="echo", prompt=text, **kw).to_wire()  # type: ignore[arg-type]


async def test_generate_streams_chunks_then_usage() -> None:
    async with connected(make_service()) as (client, _):
        async with client.open_call("generate", params("one two three")) as call:
            chunks = [c["text"] async for c in call]
        assert "".join(chunks) == "one two three"
        assert call.result == {"finish_reason": "stop", "prompt_tokens": 3, "completion_tokens": 3}


async def test_concurrent_calls_share_one_stream() -> None:
    async with connected(make_service(capacity=4, max_queue=10)) as (client, _):
        results: list[str] = []

        async def one(i: int) -> None:
            async with client.open_call("generate", params(f"call {i}")) as call:
                results.append("".join([c["text"] async for c in call]))

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(one, i)
        assert sorted(results) == sorted(f"call {i}" for i in range(10))


async def test_unknown_model_and_bad_params_are_errors() -> None:
    async with connected(make_service()) as (client, _):
        bad_model = params("hi") | {"model": "nope"}
        with pytest.raises(RemoteError) as info:
            await client.call("generate", bad_model)
        assert info.value.code is ErrorCode.MODEL_NOT_FOUND
        with pytest.raises(RemoteError) as info:
            await client.call("generate", {"model": "echo"})
        assert info.value.code is ErrorCode.BAD_REQUEST
        with pytest.raises(RemoteError) as info:
            await client.call("no-such-method", {})
        assert info.value.code is ErrorCode.BAD_REQUEST
        # The stream still serves after those errors.
        assert (await client.call("status", {}))["capacity"] == 2


async def test_client_role_cannot_generate() -> None:
    async with connected(make_service(), cert=b"client-cert") as (client, _):
        with pytest.raises(RemoteError) as info:
            await client.call("generate", params("hi"))
        assert info.value.code is ErrorCode.UNAUTHORIZED


async def test_unadmitted_peer_is_refused() -> None:
    async with connected(make_service(), cert=b"forged") as (client, _):
        with pytest.raises((RemoteError, ConnectionLost)):
            await client.call("status", {})


class RecordingRunner:
    """Like a real model, produces tokens in its own thread (one per ``delay``, up to
    1,000) and checks ``cancelled`` between them; records what it was told and did.

    The scheduler slot frees itself whether or not the model stops, so only the runner
    itself can show that leaving a call really stops the work.
    """

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self.produced = 0
        self.saw_cancel = threading.Event()
        self.finished = threading.Event()

    @property
    def info(self) -> ModelInfo:
        return EchoRunner().info

    def generate(self, params: GenerateParams, cancelled: threading.Event) -> Iterator[Delta]:
        tokens: queue.Queue[Delta] = queue.Queue()

        def produce() -> None:
            try:
                for count in range(1, 1001):
                    if cancelled.is_set():
                        self.saw_cancel.set()
                        tokens.put(Delta("", 1, count - 1, "cancelled"))
                        return
                    time.sleep(self._delay)
                    self.produced = count
                    tokens.put(Delta(" w", 1, count))
                tokens.put(Delta("", 1, 1000, "length"))
            finally:
                self.finished.set()

        threading.Thread(target=produce, daemon=True).start()
        while True:
            delta = tokens.get()
            yield delta
            if delta.finish_reason is not None:
                return

    def close(self) -> None:
        pass


async def test_leaving_a_call_stops_the_model_within_a_token() -> None:
    runner = RecordingRunner(delay=0.02)
    service = NodeService(Roster.of({"echo": runner}, 2, 2), lambda: 0)
    async with connected(service) as (client, _):
        async with client.open_call("generate", params("go")) as call:
            async for _ in call:
                break
        left_at = runner.produced
        # Polls, with a generous deadline: a loaded machine may be slow, the runner not.
        with trio.fail_after(10):
            while not runner.finished.is_set():
                await trio.sleep(0.01)
        assert runner.saw_cancel.is_set()
        # The runner checks between tokens: at most the tokens already under way follow.
        assert runner.produced - left_at <= 3
        with trio.fail_after(5):
            await service.roster.wait_idle()
        assert service.roster.inflight == 0


async def test_deadline_exceeded() -> None:
    async with connected(make_service(delay=0.05)) as (client, _):
        with pytest.raises(RemoteError) as info:
            await client.call("generate", params("w " * 100), timeout=0.1)
        assert info.value.code is ErrorCode.DEADLINE_EXCEEDED


async def test_overloaded_when_queue_full() -> None:
    service = make_service(delay=0.05, capacity=1, max_queue=1)
    async with connected(service) as (client, nursery):

        async def hold() -> None:
            await client.call("generate", params("w " * 20))

        nursery.start_soon(hold)
        nursery.start_soon(hold)
        while service.roster.queued < 1:
            await service.roster.wait_changed(service.roster.version)
        with pytest.raises(RemoteError) as info:
            await client.call("generate", params("x"))
        assert info.value.code is ErrorCode.OVERLOADED


async def test_watch_reports_load_changes() -> None:
    service = make_service(delay=0.05)
    async with connected(service) as (client, nursery), client.open_call("watch", {}) as watch:
        first = await watch.__anext__()
        assert first["inflight"] == 0
        nursery.start_soon(client.call, "generate", params("a b c d"))
        with trio.fail_after(10):
            async for update in watch:
                if update["inflight"] == 1:
                    break


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x05hello",  # a frame that is not msgpack
        b"\xff\xff\xff\xff",  # an oversized length prefix
        encode_frame(b"\x93\x01\x02\x03"),  # msgpack, but not a map
    ],
)
async def test_garbage_closes_only_that_stream(garbage: bytes) -> None:
    service = make_service()
    server = RpcServer(service.handlers, authorize)
    async with trio.open_nursery() as nursery:
        bad_left, bad_right = trio.testing.memory_stream_pair()
        nursery.start_soon(server.serve, TrioByteStream(bad_right), "bad")
        await bad_left.send_all(garbage)
        reply = b""
        with trio.fail_after(10):
            while chunk := await bad_left.receive_some(1024):
                reply += chunk
        assert b"BAD_REQUEST" in reply or b"UNAUTHORIZED" in reply
        # Another caller on the same server is unaffected.
        left, right = trio.testing.memory_stream_pair()
        nursery.start_soon(server.serve, TrioByteStream(right), "good")
        client = RpcClient(TrioByteStream(left), CERT)
        await nursery.start(client.run)
        assert (await client.call("status", {}))["inflight"] == 0
        nursery.cancel_scope.cancel()


async def test_peer_vanishing_fails_pending_calls() -> None:
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        client = RpcClient(TrioByteStream(left), CERT)
        await nursery.start(client.run)

        async def vanish() -> None:
            await right.receive_some(1024)
            await trio.sleep(0.05)
            await right.aclose()

        nursery.start_soon(vanish)
        with pytest.raises(ConnectionLost) as info:
            await client.call("status", {})
        assert not info.value.started


async def test_unstreamed_answer_comes_whole_in_the_end_frame() -> None:
    async with connected(make_service()) as (client, _):
        async with client.open_call("generate", params("one two three", stream=False)) as call:
            chunks = [c async for c in call]
        assert chunks == []
        assert call.result is not None and call.result["text"] == "one two three"
        assert call.result["completion_tokens"] == 3


async def test_a_stream_broken_before_the_hello_is_a_lost_connection() -> None:
    left, right = trio.testing.memory_stream_pair()
    await right.aclose()
    await left.aclose()
    with pytest.raises(ExceptionGroup) as info:  # a RuntimeError of trio's before
        async with RpcClient(TrioByteStream(left), CERT).running():
            raise AssertionError("never running")
    assert info.group_contains(ConnectionLost)
