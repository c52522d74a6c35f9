"""The node's ``generate`` over in-memory streams: what each streamed chunk carries."""

from __future__ import annotations

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
