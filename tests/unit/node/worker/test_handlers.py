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
