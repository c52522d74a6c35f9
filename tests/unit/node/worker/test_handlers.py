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
    assert whole["texts"] == ["one two", "one two"] and "text" not in whole
    assert whole["completion_tokens"] == 4
    assert one == {"finish_reason": "stop", "prompt_tokens": 2, "completion_tokens": 2} | {
        "text": "one two"
    }
