"""The response cache's store and keys, and webhook signatures (both pure)."""

from __future__ import annotations

import pytest

from gateway.accounts.webhooks import BadSignature, sign, verify
from gateway.api.response_cache import (
    ENTRY_OVERHEAD,
    LOGPROB_OVERHEAD,
    Answer,
    ResponseCache,
    cache_key,
    deterministic,
)
from gateway.routing.router import Piece
from protocols import CallPart, ChatMessage, GenerateParams, TokenLogprob


def params(**changes: object) -> GenerateParams:
    fields: dict[str, object] = {
        "model": "echo",
        "messages": [ChatMessage("user", "hi")],
        "temperature": 0.0,
    } | changes
    return GenerateParams(**fields)  # type: ignore[arg-type]


def answer(text: str) -> Answer:
    return Answer((Piece(text),), "stop", 1, 1)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_only_greedy_or_seeded_calls_are_deterministic() -> None:
    assert deterministic(params())
    assert deterministic(params(temperature=0.7, seed=3))
    assert not deterministic(params(temperature=0.7))
    assert not deterministic(params(temperature=None))


def test_the_key_covers_everything_that_changes_the_answer() -> None:
    base = cache_key("alice", "chat", "float16/2048", params())
    assert cache_key("alice", "chat", "float16/2048", params()) == base
    for other in [
        cache_key("alice", "chat", "float16/2048", params(stream=False)),
        cache_key("bob", "chat", "float16/2048", params()),
        cache_key("alice", "completion", "float16/2048", params()),
        cache_key("alice", "chat", "bfloat16/2048", params()),
        cache_key("alice", "chat", "float16/2048", params(model="other")),
        cache_key("alice", "chat", "float16/2048", params(max_tokens=9)),
        cache_key("alice", "chat", "float16/2048", params(stop=["x"])),
        cache_key("alice", "chat", "float16/2048", params(messages=[ChatMessage("user", "ho")])),
    ]:
        assert other != base


def test_an_answer_is_sized_by_everything_it_holds() -> None:
    piece = Piece(
        "héllo",
        [TokenLogprob("hé", -0.5, (("hé", -0.5), ("ha", -1.0)))],
        [CallPart(0, '{"a":1}', "call_1", "add")],
    )
    logprob = LOGPROB_OVERHEAD + len("hé".encode()) * 2 + len(b"ha")
    call = len(b"call_1") + len(b"add") + len(b'{"a":1}')
    assert Answer((piece,), "stop", 1, 1).size == ENTRY_OVERHEAD + 6 + logprob + call


def test_entries_expire() -> None:
    clock = Clock()
    cache = ResponseCache(10_000, ttl=5, clock=clock)
    cache.put("k", answer("a"))
    assert cache.get("k") == answer("a")
    clock.now = 5
    assert cache.get("k") is None and cache.size == 0 and len(cache) == 0


def test_the_least_recently_used_go_first_and_the_size_stays_bounded() -> None:
    each = answer("x" * 100).size
    assert each == ENTRY_OVERHEAD + 100
    cache = ResponseCache(3 * each, ttl=60, clock=Clock())
    for key in "abc":
        cache.put(key, answer("x" * 100))
    assert cache.get("a") is not None  # now b is the least recently used
    cache.put("d", answer("x" * 100))
    assert cache.get("b") is None
    assert all(cache.get(k) is not None for k in "acd")
    assert cache.size == 3 * each
    cache.put("a", answer("x" * 100))  # replaced, not counted twice
    assert cache.size == 3 * each
    cache.put("huge", answer("x" * 4 * each))  # larger than the whole cache: not kept
    assert cache.get("huge") is None and len(cache) == 3


def test_a_signature_verifies_only_for_its_body_secret_and_time() -> None:
    header = sign("s3cret", b'{"a":1}', 1000.0)
    assert header.startswith("t=1000,v1=")
    verify("s3cret", b'{"a":1}', header, 1100.0)
    with pytest.raises(BadSignature, match="does not match"):
        verify("s3cret", b'{"a":2}', header, 1100.0)
    with pytest.raises(BadSignature, match="does not match"):
        verify("other", b'{"a":1}', header, 1100.0)
    with pytest.raises(BadSignature, match="too old"):
        verify("s3cret", b'{"a":1}', header, 1000.0 + 301)
    with pytest.raises(BadSignature, match="no time"):
        verify("s3cret", b'{"a":1}', "v1=abc", 1000.0)
