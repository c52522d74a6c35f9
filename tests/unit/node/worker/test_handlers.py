"""The node's handlers over in-memory streams: what each streamed ``generate`` chunk
carries, and who may report demand."""

from __future__ import annotations

import pytest

from node.p2p.rpc_client import RemoteError
from node.worker.handlers import NodeService
from node.worker.roster import Roster
from node.worker.runners import EchoRunner
from protocols import Demand, ErrorCode, ModelDemand
from tests.unit.node.p2p.test_rpc import connected, make_service, params


async def test_every_chunk_carries_the_token_counts_so_far() -> None:
    # A caller that hangs up, or a call that fails, is charged from the last chunk it got.
    async with (
        connected(make_service()) as (client, _),
        client.open_call("generate", params("one two three")) as call,
    ):
        chunks = [chunk async for chunk in call]
    counts = [c["completion_tokens"] for c in chunks]  # deltas may go out together
    assert counts == sorted(set(counts))
    assert counts[-1] == 3
    assert {c["prompt_tokens"] for c in chunks} == {3}
    assert "".join(c["text"] for c in chunks) == "one two three"


async def test_several_choices_stream_with_their_index_and_end_each_with_its_finish() -> None:
    async with (
        connected(make_service()) as (client, _),
        client.open_call("generate", params("one two three", n=3)) as call,
    ):
        chunks = [chunk async for chunk in call]
    by_index: dict[int, str] = {}
    for chunk in chunks:
        by_index[chunk["index"]] = by_index.get(chunk["index"], "") + chunk["text"]
    assert by_index == {0: "one two three", 1: "one two three", 2: "one two three"}
    # Each chunk's counts are every choice's so far: a hang-up is charged for all of them.
    assert chunks[-1]["completion_tokens"] == 9
    assert call.result == {
        "finish_reason": "stop",
        "prompt_tokens": 3,
        "completion_tokens": 9,
        "choices": [{"finish_reason": "stop", "completion_tokens": 3}] * 3,
    }


async def test_several_choices_whole_come_in_the_end_frame() -> None:
    async with connected(make_service()) as (client, _):
        whole = await client.call("generate", params("one two", n=2, stream=False))
        one = await client.call("generate", params("one two", stream=False))
    assert [c["text"] for c in whole["choices"]] == ["one two", "one two"]
    assert "text" not in whole
    assert whole["completion_tokens"] == 4
    assert one == {"finish_reason": "stop", "prompt_tokens": 2, "completion_tokens": 2} | {
        "text": "one two"
    }


async def test_a_gateways_demand_report_reaches_placement_and_no_one_elses() -> None:
    heard: list[tuple[str, Demand]] = []
    roster = Roster.of({"echo": EchoRunner()}, 1, 1)
    service = NodeService(roster, lambda: 0, on_demand=lambda *report: heard.append(report))
    demand = Demand({"m": ModelDemand(2, 1.0, 0, 0, 0)})
    async with connected(service) as (client, _):
        assert await client.call("demand", demand.to_wire()) == {}
        with pytest.raises(RemoteError) as malformed:
            await client.call("demand", {"models": {"m": {"queued": "2"}}})
    async with connected(service, b"client-cert") as (client, _):
        with pytest.raises(RemoteError) as stranger:
            await client.call("demand", demand.to_wire())
    assert heard == [("peer-a", demand)]
    assert malformed.value.code == ErrorCode.BAD_REQUEST
    assert stranger.value.code == ErrorCode.UNAUTHORIZED
