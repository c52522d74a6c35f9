"""The operator's ``load_model`` and ``unload_model`` RPCs: who may call them, what they
stream, how refusals travel; and how calls to a model that is not ready are answered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from node.p2p.rpc_client import RemoteError, RpcClient
from node.p2p.rpc_server import Caller, RpcError, RpcServer
from node.p2p.streams import TrioByteStream
from node.worker.handlers import NodeService, Report
from node.worker.memory import NotEnoughMemory
from node.worker.roster import Busy, Roster
from node.worker.runners.echo import EchoRunner
from protocols import ErrorCode, GenerateParams
from protocols.operator import ModelSpec, Unload

ROLES = {b"operator": "operator", b"gateway": "gateway", b"client": "client", b"node": "node"}


class FakeControl:
    def __init__(self) -> None:
        self.loaded: list[ModelSpec] = []
        self.unloaded: list[Unload] = []

    async def load_model(self, spec: ModelSpec, report: Report) -> dict[str, Any]:
        if spec.id == "huge":
            raise NotEnoughMemory("huge does not fit: it needs 4.0 TiB")
        if spec.id == "twice":
            raise Busy("twice is already ready on this node")
        await report("loading weights", 0.5)
        await report("ready", 1.0)
        self.loaded.append(spec)
        return {"model": {"id": spec.id}, "seconds": 0.1}

    async def unload_model(self, request: Unload) -> dict[str, Any]:
        if request.model == "soon":
            raise Busy("soon is still loading: unload it once it is ready")
        self.unloaded.append(request)
        return {"model": request.model, "calls_drained": 0}


def authorize(cert: bytes, peer: str) -> Caller:
    if cert not in ROLES:
        raise RpcError(ErrorCode.UNAUTHORIZED, "not admitted")
    return Caller(peer, ROLES[cert])


@asynccontextmanager
async def node(service: NodeService, cert: bytes = b"operator") -> AsyncIterator[RpcClient]:
    left, right = trio.testing.memory_stream_pair()
    server = RpcServer(service.handlers, authorize)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve, TrioByteStream(right), "peer")
        client = RpcClient(TrioByteStream(left), cert)
        await nursery.start(client.run)
        yield client
        nursery.cancel_scope.cancel()


def service(control: FakeControl | None = None) -> NodeService:
    roster = Roster.of({"echo": EchoRunner()}, 2, 2)
    roster.begin(ModelSpec("soon"), "text-generation")
    return NodeService(roster, lambda: 0, control=control or FakeControl())


async def test_an_operator_loads_a_model_and_sees_its_progress() -> None:
    control = FakeControl()
    async with node(service(control)) as client:
        spec = ModelSpec("owner/model", "float16", 4)
        async with client.open_call("load_model", spec.to_wire()) as call:
            steps = [step async for step in call]
        assert steps == [
            {"message": "loading weights", "fraction": 0.5},
            {"message": "ready", "fraction": 1.0},
        ]
        assert call.result == {"model": {"id": "owner/model"}, "seconds": 0.1}
        assert await client.call("unload_model", {"model": "echo", "timeout": 2}) == {
            "model": "echo",
            "calls_drained": 0,
        }
    assert control.loaded == [spec]
    assert control.unloaded == [Unload("echo", 2.0)]


@pytest.mark.parametrize("cert", [b"gateway", b"client", b"node"])
async def test_nobody_but_the_operator_may_load_or_unload(cert: bytes) -> None:
    control = FakeControl()
    async with node(service(control), cert) as client:
        for method, params in [("load_model", {"id": "m"}), ("unload_model", {"model": "echo"})]:
            with pytest.raises(RemoteError) as caught:
                await client.call(method, params)
            assert caught.value.code == ErrorCode.UNAUTHORIZED
            assert caught.value.message == "only the swarm's operator may load models"
    assert (control.loaded, control.unloaded) == ([], [])


async def test_refusals_name_their_reason() -> None:
    async with node(service()) as client:
        cases: list[tuple[str, dict[str, Any], ErrorCode, str]] = [
            ("load_model", {"id": "huge"}, ErrorCode.NO_MEMORY, "it needs 4.0 TiB"),
            ("load_model", {"id": "twice"}, ErrorCode.BAD_REQUEST, "already ready"),
            ("load_model", {"id": "m", "slots": -2}, ErrorCode.BAD_REQUEST, "slots should be"),
            ("unload_model", {"model": "nope"}, ErrorCode.MODEL_NOT_FOUND, "has no 'nope'"),
            ("unload_model", {"model": "soon"}, ErrorCode.BAD_REQUEST, "still loading"),
            ("unload_model", {"timeout": 1}, ErrorCode.BAD_REQUEST, "model is missing"),
        ]
        for method, params, code, words in cases:
            with pytest.raises(RemoteError) as caught:
                await client.call(method, params)
            assert (caught.value.code, words in caught.value.message) == (code, True)


async def test_a_node_without_runtime_loading_says_so() -> None:
    plain = NodeService(Roster.of({"echo": EchoRunner()}, 1, 1), lambda: 0)
    async with node(plain) as client:
        with pytest.raises(RemoteError) as caught:
            await client.call("load_model", {"id": "m"})
        assert caught.value.code == ErrorCode.UNAVAILABLE


async def test_calls_to_a_loading_or_draining_model_go_elsewhere() -> None:
    roster = Roster.of({"echo": EchoRunner()}, 1, 1)
    roster.begin(ModelSpec("soon"), "text-generation")
    roster.drain_model("echo")
    async with node(NodeService(roster, lambda: 0), b"gateway") as client:
        for model, state in [("soon", "loading"), ("echo", "draining")]:
            params = GenerateParams(model=model, prompt="hi").to_wire()
            with pytest.raises(RemoteError) as caught:
                await client.call("generate", params)
            assert caught.value.code == ErrorCode.UNAVAILABLE  # the gateway tries another peer
            assert caught.value.message == f"{model} is {state} on this node"
