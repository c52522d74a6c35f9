"""The router: which node a call goes to, failover before the first reply, and what the
caller is told when no node answers. Nodes are fakes that replay scripted frames through
a real ``Call``; the peer table is the real one, read at a fixed clock."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio

from gateway.config import Policy
from gateway.routing.dispatch import Wait
from gateway.routing.peer_table import PeerEntry, PeerTable
from gateway.routing.router import (
    MAX_ATTEMPTS,
    WAIT_AWAY,
    WAIT_BUSY,
    WAIT_LOADING,
    Images,
    NoPeerReady,
    Router,
    UnknownModel,
    UpstreamError,
)
from gateway.routing.tracker import Tracker
from node.p2p.rpc_client import Call, CallFailed, ConnectionLost
from protocols import (
    Chunk,
    End,
    Error,
    ErrorCode,
    GenerateParams,
    ImageParams,
    Load,
    Message,
    ModelLoad,
)
from tests.unit.gateway.routing.test_peer_table import T0, record

TEXT = "text-generation"
IMAGE = "text-to-image"


class FakeNode:
    """A node's RPC client: ``open_call`` replays ``frames``, or raises ``fail``."""

    def __init__(self, frames: list[Message] | None = None, fail: CallFailed | None = None):
        self.frames = frames if frames is not None else [End(1, {})]
        self.fail = fail
        self.calls: list[tuple[str, dict[str, Any], float | None]] = []
        self.open = 0

    @asynccontextmanager
    async def open_call(
        self, method: str, params: dict[str, Any], timeout: float | None = None
    ) -> AsyncIterator[Call]:
        self.calls.append((method, params, timeout))
        if self.fail is not None:
            raise self.fail
        send, receive = trio.open_memory_channel[Message](math.inf)
        for frame in self.frames:
            send.send_nowait(frame)
        send.close()  # frames past the script read as a lost connection
        self.open += 1
        try:
            yield Call(1, receive)
        finally:
            self.open -= 1


class FakeTracker:
    """Holds the connected clients; ``find_model`` may bring nodes in from the DHT."""

    def __init__(self) -> None:
        self.clients: dict[str, FakeNode] = {}
        self.lookups: list[str] = []
        self.found: dict[str, list[tuple[str, FakeNode, dict[str, str]]]] = {}
        self.table: PeerTable | None = None
        self.on_change: list[Callable[[], None]] = []  # table changes a test makes

    async def find_model(self, model: str) -> None:
        self.lookups.append(model)
        assert self.table is not None
        for peer, node, models in self.found.get(model, []):
            add(self.table, self, peer, node, models)


def load(inflight: int = 0, queued: int = 0, capacity: int = 1, draining: bool = False) -> Load:
    return Load(inflight, queued, capacity, 0.0, memory_free=0, draining=draining)


def add(
    table: PeerTable,
    tracker: FakeTracker,
    peer: str,
    node: FakeNode | None = None,
    models: dict[str, str] | None = None,
    load_: Load | None = None,
    task: str = TEXT,
    connected: bool = True,
) -> PeerEntry:
    """A node with ``models`` (id -> state) in the table, connected and fresh at ``T0``."""
    entry = table.upsert(record(peer, models, task=task), now=T0)
    if connected:
        table.update_load(peer, load_ or load(), now=T0)
        tracker.clients[peer] = node or FakeNode()
    return entry


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.routing.router.time", SimpleNamespace(time=lambda: T0))


@pytest.fixture
def table() -> PeerTable:
    return PeerTable()


@pytest.fixture
def tracker(table: PeerTable) -> FakeTracker:
    fake = FakeTracker()
    fake.table = table
    return fake


@pytest.fixture
def router(table: PeerTable, tracker: FakeTracker) -> Router:
    return Router(table, cast(Tracker, tracker))


def chat(model: str = "m") -> GenerateParams:
    return GenerateParams(model=model, prompt="hi", max_tokens=8)


def answer(*texts: str, **end: Any) -> list[Message]:
    return [*[Chunk(1, {"text": t}) for t in texts], End(1, end)]


# --- which node ---------------------------------------------------------------------------


async def test_the_least_loaded_node_gets_the_call(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    busy, idle = FakeNode(), FakeNode(answer("hello"))
    add(table, tracker, "peer-busy", busy, load_=load(inflight=1))
    add(table, tracker, "peer-idle", idle, load_=load())
    async with router.generate(chat(), timeout=12.5) as generation:
        assert generation.peer_id == "peer-idle"
        assert await generation.text() == "hello"
    assert busy.calls == []
    assert idle.calls == [("generate", chat().to_wire(), 12.5)]
    assert router.retries == 0


async def test_a_call_counts_against_its_node_until_it_ends(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    entry = add(table, tracker, "peer-a", FakeNode(answer("x")))
    async with router.generate(chat(), timeout=1) as generation:
        assert entry.local_delta == 1
        await generation.text()
    assert entry.local_delta == 0


async def test_a_served_call_times_its_node_for_the_ranking(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    entry = add(table, tracker, "peer-a", FakeNode(answer("x")))
    async with router.generate(chat(), timeout=1) as generation:
        await generation.text()
        await trio.sleep(0.05)
    assert entry.held["m"] >= 0.05


async def test_a_node_gone_from_the_table_mid_call_is_no_error(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    add(table, tracker, "peer-a", FakeNode(answer("x")))
    async with router.generate(chat(), timeout=1) as generation:
        table.remove("peer-a")
        assert await generation.text() == "x"
    assert "peer-a" not in table.entries


async def test_nodes_without_a_connection_are_not_candidates(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    add(table, tracker, "peer-a", FakeNode(answer("from a")))
    add(table, tracker, "peer-b", FakeNode(answer("from b")), load_=load(5, capacity=8))
    del tracker.clients["peer-a"]
    async with router.generate(chat(), timeout=1) as generation:
        assert generation.peer_id == "peer-b"


# --- failover -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first_reply",
    [
        Error(1, ErrorCode.OVERLOADED, "queue full"),
        Error(1, ErrorCode.UNAVAILABLE, "draining"),
        Error(1, ErrorCode.MODEL_NOT_FOUND, "unloaded"),
    ],
    ids=lambda e: e.code.value,
)
async def test_a_retryable_refusal_passes_the_call_to_the_next_node(
    router: Router, table: PeerTable, tracker: FakeTracker, first_reply: Error
) -> None:
    refusing, answering = FakeNode([first_reply]), FakeNode(answer("ok"))
    first = add(table, tracker, "peer-a", refusing)
    second = add(table, tracker, "peer-b", answering, load_=load(inflight=1))
    async with router.generate(chat(), timeout=1) as generation:
        assert generation.peer_id == "peer-b"
        assert await generation.text() == "ok"
        assert (first.local_delta, second.local_delta) == (0, 1)
    assert len(refusing.calls) == len(answering.calls) == 1
    assert refusing.open == 0
    assert router.retries == 1


@pytest.mark.parametrize(
    "failure",
    [ConnectionLost("stream reset", started=False), CallFailed("cannot open a stream")],
    ids=["lost-before-reply", "call-failed"],
)
async def test_a_node_that_cannot_be_reached_is_skipped(
    router: Router, table: PeerTable, tracker: FakeTracker, failure: CallFailed
) -> None:
    add(table, tracker, "peer-a", FakeNode(fail=failure))
    add(table, tracker, "peer-b", FakeNode(answer("ok")), load_=load(inflight=1))
    async with router.generate(chat(), timeout=1) as generation:
        assert generation.peer_id == "peer-b"
    assert router.retries == 1
    assert table.entries["peer-a"].local_delta == 0


async def test_a_node_that_vanishes_before_replying_is_skipped(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    add(table, tracker, "peer-a", FakeNode([]))
    add(table, tracker, "peer-b", FakeNode(answer("ok")), load_=load(inflight=1))
    async with router.generate(chat(), timeout=1) as generation:
        assert generation.peer_id == "peer-b"


async def test_a_lost_call_that_had_started_is_not_retried(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    later = FakeNode(answer("ok"))
    add(table, tracker, "peer-a", FakeNode(fail=ConnectionLost("reset mid-call", started=True)))
    add(table, tracker, "peer-b", later, load_=load(inflight=1))
    with pytest.raises(UpstreamError) as caught:
        async with router.generate(chat(), timeout=1):
            pass
    assert caught.value.code is ErrorCode.UNAVAILABLE
    assert str(caught.value) == "reset mid-call"
    assert later.calls == []
    assert table.entries["peer-a"].local_delta == 0


@pytest.mark.parametrize(
    "code", [ErrorCode.BAD_REQUEST, ErrorCode.INTERNAL, ErrorCode.DEADLINE_EXCEEDED]
)
async def test_a_final_refusal_reaches_the_caller_without_failover(
    router: Router, table: PeerTable, tracker: FakeTracker, code: ErrorCode
) -> None:
    later = FakeNode(answer("ok"))
    add(table, tracker, "peer-a", FakeNode([Error(1, code, "prompt too long")]))
    add(table, tracker, "peer-b", later, load_=load(inflight=1))
    with pytest.raises(UpstreamError) as caught:
        async with router.generate(chat(), timeout=1):
            pass
    assert caught.value.code is code
    assert str(caught.value) == "prompt too long"
    assert later.calls == []
    assert router.retries == 0


async def test_at_most_max_attempts_nodes_are_tried(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    # Refusals that are failures (a full node is waited for instead: test_dispatch).
    nodes = [FakeNode([Error(1, ErrorCode.UNAVAILABLE, f"full {i}")]) for i in range(5)]
    for i, node in enumerate(nodes):
        add(table, tracker, f"peer-{i}", node, load_=load(inflight=i))
    with pytest.raises(NoPeerReady) as caught:
        async with router.generate(chat(), timeout=1):
            pass
    assert [len(n.calls) for n in nodes] == [1] * MAX_ATTEMPTS + [0] * (5 - MAX_ATTEMPTS)
    assert MAX_ATTEMPTS == 3
    assert router.retries == MAX_ATTEMPTS
    assert str(caught.value).endswith(f"; last error: full {MAX_ATTEMPTS - 1}")
    assert caught.value.retry_after == WAIT_BUSY  # full now; a slot frees when a call ends
    assert all(e.local_delta == 0 for e in table.entries.values())


async def test_every_failover_is_logged_with_the_reason(
    router: Router, table: PeerTable, tracker: FakeTracker, caplog: pytest.LogCaptureFixture
) -> None:
    add(table, tracker, "node-0123456789", FakeNode([Error(1, ErrorCode.OVERLOADED, "full")]))
    add(table, tracker, "peer-b", FakeNode(answer("ok")), load_=load(inflight=1))
    with caplog.at_level(logging.INFO, logger="gateway.routing.router"):
        async with router.generate(chat(), timeout=1):
            pass
    assert caplog.messages == ["node 23456789 did not take the call (full); trying another"]


# --- when no node answers -----------------------------------------------------------------


async def test_an_unknown_model_is_looked_up_once_then_refused_with_what_exists(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    add(table, tracker, "peer-a", models={"b-model": "ready", "a-model": "loading"})
    with pytest.raises(UnknownModel) as caught:
        async with router.generate(chat("nope"), timeout=1):
            pass
    assert tracker.lookups == ["nope"]
    assert caught.value.available == ["a-model", "b-model"]
    assert str(caught.value) == (
        "model 'nope' is not served by any node (available: a-model, b-model)"
    )


async def test_an_unknown_model_in_an_empty_swarm_lists_none(router: Router) -> None:
    with pytest.raises(
        UnknownModel, match=r"^model 'm' is not served by any node \(available: none\)$"
    ):
        async with router.generate(chat(), timeout=1):
            pass


async def test_a_model_found_in_the_dht_is_served(router: Router, tracker: FakeTracker) -> None:
    node = FakeNode(answer("found"))
    tracker.found["m"] = [("peer-dht", node, {"m": "ready"})]
    async with router.generate(chat(), timeout=1) as generation:
        assert generation.peer_id == "peer-dht"
        assert await generation.text() == "found"
    assert tracker.lookups == ["m"]


async def test_a_known_model_needs_no_lookup(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    add(table, tracker, "peer-a")
    async with router.generate(chat(), timeout=1):
        pass
    assert tracker.lookups == []


async def test_a_model_of_another_task_is_unknown_to_this_one(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    add(table, tracker, "peer-a", task=IMAGE)
    with pytest.raises(UnknownModel) as caught:
        async with router.generate(chat(), timeout=1):
            pass
    assert caught.value.available == []


async def test_no_ready_node_says_why_for_each_node(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    add(table, tracker, "peer-0000aaaaaaaa", models={"m": "failed"})
    add(table, tracker, "peer-0000bbbbbbbb", load_=load(draining=True))
    add(table, tracker, "peer-0000cccccccc", connected=False)
    add(table, tracker, "peer-0000dddddddd", models={"other": "ready"})
    with pytest.raises(NoPeerReady) as caught:
        async with router.generate(chat(), timeout=1):
            pass
    assert str(caught.value) == (
        "no node can take 'm' now (aaaaaaaa: failed; bbbbbbbb: ready (draining); "
        "cccccccc: ready (not responding))"
    )
    assert router.retries == 0
    # The soonest guess: a node draining or silent is gone from the table sooner than a
    # model loads.
    assert caught.value.retry_after == WAIT_AWAY


async def test_a_model_still_loading_asks_for_a_longer_wait(
    table: PeerTable, tracker: FakeTracker
) -> None:
    # A call waits for the load up to the router's limit (60 s by default): a short one here.
    router = Router(table, cast(Tracker, tracker), max_wait=0.2)
    add(table, tracker, "peer-0000aaaaaaaa", models={"m": "loading"})
    with pytest.raises(NoPeerReady) as caught:
        async with router.generate(chat(), timeout=1):
            pass
    assert caught.value.retry_after == WAIT_LOADING > WAIT_AWAY > WAIT_BUSY


# --- what the caller reads ----------------------------------------------------------------


async def test_deltas_are_the_chunks_then_the_end_text_and_usage_is_the_end_data(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    frames: list[Message] = [
        Chunk(1, {"text": "a"}),
        Chunk(1, {"other": 1}),
        Chunk(1, {"text": "b"}),
        End(1, {"text": "c", "completion_tokens": 3}),
    ]
    add(table, tracker, "peer-a", FakeNode(frames))
    async with router.generate(chat(), timeout=1) as generation:
        assert generation.first == {"text": "a"}
        assert [d async for d in generation.deltas()] == ["a", "", "b", "c"]
    assert generation.usage == {"text": "c", "completion_tokens": 3}


async def test_an_answer_with_no_chunks_is_its_end_text(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    add(table, tracker, "peer-a", FakeNode([End(1, {"text": "whole", "n": 1})]))
    async with router.generate(chat(), timeout=1) as generation:
        assert generation.first is None
        assert await generation.text() == "whole"
        assert generation.usage == {"text": "whole", "n": 1}


async def test_a_streamed_answer_ends_without_text_in_its_end(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    add(table, tracker, "peer-a", FakeNode(answer("x", "y", completion_tokens=2)))
    async with router.generate(chat(), timeout=1) as generation:
        assert [d async for d in generation.deltas()] == ["x", "y"]
        assert generation.usage == {"completion_tokens": 2}


async def test_a_node_error_mid_answer_is_an_upstream_error(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    frames: list[Message] = [Chunk(1, {"text": "a"}), Error(1, ErrorCode.INTERNAL, "GPU gone")]
    add(table, tracker, "peer-a", FakeNode(frames))
    add(table, tracker, "peer-b", FakeNode(answer("b")), load_=load(inflight=1))
    async with router.generate(chat(), timeout=1) as generation:
        with pytest.raises(UpstreamError) as caught:
            await generation.text()
    assert caught.value.code is ErrorCode.INTERNAL
    assert str(caught.value) == "node failed mid-answer: GPU gone"
    assert generation.usage == {}


async def test_a_connection_lost_mid_answer_is_unavailable(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    add(table, tracker, "peer-a", FakeNode([Chunk(1, {"text": "a"})]))
    async with router.generate(chat(), timeout=1) as generation:
        with pytest.raises(UpstreamError) as caught:
            await generation.text()
    assert caught.value.code is ErrorCode.UNAVAILABLE
    assert str(caught.value) == "node lost mid-answer: connection to peer lost"


# --- images -------------------------------------------------------------------------------


def image_params(n: int = 2) -> ImageParams:
    return ImageParams(model="sd", prompt="a cat", n=n)


def images_node(*chunks: dict[str, Any], seed: Any = 7) -> FakeNode:
    return FakeNode([*[Chunk(1, c) for c in chunks], End(1, {"seed": seed})])


async def test_images_come_back_with_their_node_and_seed(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    node = images_node({"image": b"png1"}, {"image": b"png2"})
    add(table, tracker, "peer-img", node, models={"sd": "ready"}, task=IMAGE)
    images = await router.generate_image(image_params(), timeout=30)
    assert images == Images("peer-img", [b"png1", b"png2"], 7)
    assert node.calls == [("generate_image", image_params().to_wire(), 30)]
    assert table.entries["peer-img"].local_delta == 0


async def test_a_seed_that_is_not_an_integer_is_dropped(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    add(table, tracker, "p", images_node({"image": b"x"}, seed="7"), {"sd": "ready"}, task=IMAGE)
    assert (await router.generate_image(image_params(1), timeout=1)).seed is None


async def test_an_answer_without_a_seed_has_none(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    node = FakeNode([Chunk(1, {"image": b"x"}), End(1, {})])
    add(table, tracker, "p", node, {"sd": "ready"}, task=IMAGE)
    assert (await router.generate_image(image_params(1), timeout=1)).seed is None


@pytest.mark.parametrize(
    "chunks",
    [
        [{"image": b"one"}],
        [{"image": b"one"}, {"image": b"two"}, {"image": b"three"}],
        [{"image": b"one"}, {"image": "not bytes"}],
        [{"image": b"one"}, {"text": "no image"}],
        [],
    ],
    ids=["too-few", "too-many", "not-bytes", "missing", "none"],
)
async def test_a_malformed_image_answer_is_an_internal_error(
    router: Router, table: PeerTable, tracker: FakeTracker, chunks: list[dict[str, Any]]
) -> None:
    add(table, tracker, "peer-0000abcd1234", images_node(*chunks), {"sd": "ready"}, task=IMAGE)
    with pytest.raises(UpstreamError) as caught:
        await router.generate_image(image_params(2), timeout=1)
    assert caught.value.code is ErrorCode.INTERNAL
    assert str(caught.value) == "node abcd1234 sent a malformed answer"


@pytest.mark.parametrize(
    ("last", "code", "says"),
    [
        (Error(1, ErrorCode.INTERNAL, "OOM"), ErrorCode.INTERNAL, "node failed mid-answer: OOM"),
        (None, ErrorCode.UNAVAILABLE, "node lost mid-answer: connection to peer lost"),
    ],
    ids=["error", "lost"],
)
async def test_an_image_call_that_fails_after_its_first_image_is_an_upstream_error(
    router: Router,
    table: PeerTable,
    tracker: FakeTracker,
    last: Error | None,
    code: ErrorCode,
    says: str,
) -> None:
    frames: list[Message] = [Chunk(1, {"image": b"one"})]
    if last is not None:
        frames.append(last)
    add(table, tracker, "p", FakeNode(frames), {"sd": "ready"}, task=IMAGE)
    with pytest.raises(UpstreamError) as caught:
        await router.generate_image(image_params(2), timeout=1)
    assert caught.value.code is code
    assert str(caught.value) == says


async def test_an_image_node_that_refuses_passes_the_call_on(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    busy = FakeNode([Error(1, ErrorCode.OVERLOADED, "busy")])
    add(table, tracker, "peer-a", busy, {"sd": "ready"}, task=IMAGE)
    add(table, tracker, "peer-b", images_node({"image": b"x"}), {"sd": "ready"}, task=IMAGE)
    images = await router.generate_image(image_params(1), timeout=1)
    assert images.peer_id == "peer-b"


# --- what the router tells the API --------------------------------------------------------


def test_models_lists_every_advertised_model_sorted_and_by_task(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    add(table, tracker, "peer-a", models={"zeta": "ready", "alpha": "loading"})
    add(table, tracker, "peer-b", models={"sd": "ready"}, task=IMAGE)
    assert router.models() == ["alpha", "sd", "zeta"]
    assert router.models(TEXT) == ["alpha", "zeta"]
    assert router.models(IMAGE) == ["sd"]
    assert router.models("translation") == []


def test_serving_describes_each_node_of_each_model(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    add(
        table,
        tracker,
        "peer-a",
        models={"m": "ready", "x": "loading"},
        load_=Load(2, 3, 4, 0.0, memory_free=0),
    )
    add(table, tracker, "peer-b", load_=load(draining=True))
    add(table, tracker, "peer-c", connected=False)
    # A text model without a chat template or constrained decoding: completions only.
    every = ("chat", "completion", "tools", "json", "embeddings", "dimensions", "vision")
    text = {name: name == "completion" for name in (*every, "speech", "transcription", "image")}
    assert router.serving() == {
        "m": [
            {
                "peer_id": "peer-a",
                "state": "ready",
                "task": TEXT,
                "healthy": True,
                "inflight": 2,
                "queued": 3,
                "capacity": 4,
                "capabilities": text,
            },
            {
                "peer_id": "peer-b",
                "state": "ready",
                "task": TEXT,
                "healthy": False,
                "inflight": 0,
                "queued": 0,
                "capacity": 1,
                "capabilities": text,
            },
            {
                "peer_id": "peer-c",
                "state": "ready",
                "task": TEXT,
                "healthy": False,
                "inflight": 0,
                "queued": 0,
                "capacity": 1,
                "capabilities": text,
            },
        ],
        "x": [
            {
                "peer_id": "peer-a",
                "state": "loading",
                "task": TEXT,
                "healthy": True,
                "inflight": 2,
                "queued": 3,
                "capacity": 4,
                "capabilities": text,
            },
        ],
    }


def test_a_node_silent_for_too_long_is_not_healthy(
    router: Router, table: PeerTable, tracker: FakeTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(table, tracker, "peer-a")
    monkeypatch.setattr("gateway.routing.router.time", SimpleNamespace(time=lambda: T0 + 3.5))
    assert router.serving()["m"][0]["healthy"] is False


async def test_a_text_answer_is_every_piece_joined_as_is(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    add(table, tracker, "peer-a", FakeNode(answer("Hel", "lo", " world", text="!")))
    async with router.generate(chat(), timeout=1) as generation:
        assert await generation.text() == "Hello world!"


async def test_a_first_reply_without_text_is_an_empty_delta(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    add(table, tracker, "peer-a", FakeNode([Chunk(1, {"role": "assistant"}), *answer("x")]))
    async with router.generate(chat(), timeout=1) as generation:
        assert [d async for d in generation.deltas()] == ["", "x"]


async def test_an_image_call_for_a_text_model_is_an_unknown_model(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    node = images_node({"image": b"x"})
    add(table, tracker, "peer-a", node, models={"sd": "ready"}, task=TEXT)
    with pytest.raises(UnknownModel) as caught:
        await router.generate_image(image_params(1), timeout=1)
    assert caught.value.available == []
    assert node.calls == []


# --- routing policies ---------------------------------------------------------------------


def policy_router(table: PeerTable, tracker: FakeTracker, policy: Policy) -> Router:
    return Router(table, cast(Tracker, tracker), policy, random.Random(7))


async def routed(router: Router, calls: int) -> list[str]:
    peers = []
    for _ in range(calls):
        async with router.generate(chat(), timeout=1) as generation:
            peers.append(generation.peer_id)
            await generation.text()
    return peers


async def test_round_robin_takes_every_ready_node_in_turn_whatever_its_load(
    table: PeerTable, tracker: FakeTracker
) -> None:
    for peer, inflight in (("peer-c", 0), ("peer-a", 9), ("peer-b", 3)):
        add(table, tracker, peer, FakeNode(answer("x")), load_=load(inflight, capacity=16))
    add(table, tracker, "peer-d", models={"m": "loading"})
    router = policy_router(table, tracker, "round-robin")
    assert await routed(router, 7) == ["peer-a", "peer-b", "peer-c"] * 2 + ["peer-a"]


async def test_round_robin_fails_over_to_the_next_node_in_the_cycle(
    table: PeerTable, tracker: FakeTracker
) -> None:
    add(table, tracker, "peer-a", FakeNode(answer("a")))
    add(table, tracker, "peer-b", FakeNode([Error(1, ErrorCode.OVERLOADED, "full")]))
    add(table, tracker, "peer-c", FakeNode(answer("c")))
    router = policy_router(table, tracker, "round-robin")
    assert await routed(router, 3) == ["peer-a", "peer-c", "peer-c"]
    assert router.retries == 1


async def test_random_spreads_calls_over_ready_nodes_whatever_their_load(
    table: PeerTable, tracker: FakeTracker
) -> None:
    add(table, tracker, "peer-idle", FakeNode(answer("x")))
    add(table, tracker, "peer-busy", FakeNode(answer("x")), load_=load(50, capacity=64))
    add(table, tracker, "peer-draining", FakeNode(answer("x")), load_=load(draining=True))
    peers = await routed(policy_router(table, tracker, "random"), 40)
    assert set(peers) == {"peer-idle", "peer-busy"}
    assert 10 <= peers.count("peer-busy") <= 30  # seeded: the same count every run


async def test_expected_wait_is_the_default_policy(table: PeerTable, tracker: FakeTracker) -> None:
    add(table, tracker, "peer-a", FakeNode(answer("x")), load_=load(inflight=1))
    add(table, tracker, "peer-b", FakeNode(answer("x")))
    router = Router(table, cast(Tracker, tracker))
    assert router.policy == "expected-wait"
    assert await routed(router, 3) == ["peer-b"] * 3


async def test_a_refused_call_waits_for_the_nodes_next_load_update_then_succeeds(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    # The only node says OVERLOADED: it counts as full until it next reports its load, and
    # the call waits at the head of the queue instead of failing or retrying at once.
    node = FakeNode([Error(1, ErrorCode.OVERLOADED, "full")])
    add(table, tracker, "peer-a", node)
    texts: list[str] = []

    async def ask() -> None:
        async with router.generate(chat(), timeout=5) as generation:
            texts.append(await generation.text())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await trio.sleep(0.3)
        assert len(node.calls) == 1 and texts == []
        assert router.dispatcher.queue.waiting("m") == 1
        node.frames = answer("ok")
        table.update_load("peer-a", load(), now=T0)
        for hear in tracker.on_change:  # what the tracker does on every load update
            hear()
    assert texts == ["ok"] and len(node.calls) == 2
    assert router.retries == 1


async def test_before_a_call_is_timed_the_eta_comes_from_the_nodes_speed(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    add(table, tracker, "peer-a")
    both_busy = {"m": ModelLoad(2, 0, 2, 0, tokens_per_s=40.0)}
    table.update_load("peer-a", load(inflight=2, capacity=2), now=T0, models=both_busy)
    # 20 tokens/s a slot: a call of up to 100 tokens holds one 5 s, and with two slots one
    # ends every 2.5 s. The node's speed, not a fixed guess.
    first = await router.ask("m", TEXT, Wait("ann", 1, 60.0, tokens=100))
    assert router.where(first) == (0, 2.5)
    # A guess, however long, does not turn a call away: it waits up to its own limit.
    second = await router.ask("m", TEXT, Wait("bob", 1, 1.0, tokens=100))
    assert router.where(second) == (1, 5.0)
    # Without a speed from the node either, a call is taken to hold a slot for a second.
    table.update_load("peer-a", load(inflight=2, capacity=2), now=T0, models={})
    assert router.where(first) == (0, 0.5)
    router.cancel(first)
    router.cancel(second)


async def test_a_model_whose_only_node_left_is_not_responding_until_its_record_expires(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    entry = add(table, tracker, "peer-0000aaaaaaaa", models={"m": "ready"})
    table.remove("peer-0000aaaaaaaa", now=T0 - 3)
    del tracker.clients["peer-0000aaaaaaaa"]
    with pytest.raises(NoPeerReady) as caught:  # "not served by any node" (404) before
        async with router.generate(chat(), timeout=1):
            pass
    assert str(caught.value) == "no node can take 'm' now (aaaaaaaa: not responding for 3 s)"
    assert caught.value.retry_after == WAIT_AWAY
    table.expire(entry.record.expires_at + 1)
    with pytest.raises(UnknownModel):
        async with router.generate(chat(), timeout=1):
            pass
    table.upsert(entry.record, now=T0)  # back before it expired: no longer departed
    assert table.departed == {}


async def test_a_revoked_node_is_forgotten_rather_than_away(
    router: Router, table: PeerTable, tracker: FakeTracker
) -> None:
    add(table, tracker, "peer-0000aaaaaaaa", models={"m": "ready"})
    table.remove("peer-0000aaaaaaaa")
    table.forget("peer-0000aaaaaaaa")
    del tracker.clients["peer-0000aaaaaaaa"]
    with pytest.raises(UnknownModel):
        async with router.generate(chat(), timeout=1):
            pass
