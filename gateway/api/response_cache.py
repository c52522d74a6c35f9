"""The response cache: a deterministic text call asked again is answered from memory.

A call is deterministic when it samples greedily (``temperature`` 0) or with a fixed
``seed``: the same model build then gives the same answer. The key is a SHA-256 of the
canonical request (model, messages or prompt, every sampling parameter, whether it
streams), the build (``advertised_revision``: what the nodes serving the model say about
it) and, unless the operator shares entries between users, the user. What is kept is the
answer as it was forwarded, piece by piece (text, logprobs, tool calls), with why it ended
and its token counts: a hit is rendered afresh for the asking route, a streamed one chunk
for chunk as the node sent them. (A plain answer comes from its node in one piece, so a
streamed call is not answered from it: streamed and plain calls keep entries apart.)

It lives in memory (a restart empties it) and is bounded in bytes, least recently used
first out; each entry expires after ``ttl`` seconds.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gateway.routing.peer_table import PeerTable
from gateway.routing.router import Piece
from protocols import GenerateParams

# What an entry costs besides its text: the key, the record, the dictionary's slot.
ENTRY_OVERHEAD = 256
LOGPROB_OVERHEAD = 64  # a token's logprob record, besides its text


@dataclass(frozen=True)
class Answer:
    """A text call's answer as the caller received it: its pieces (text, logprobs, tool
    calls), why it ended, and its token counts."""

    pieces: tuple[Piece, ...]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int

    @property
    def size(self) -> int:
        return ENTRY_OVERHEAD + sum(_piece_size(piece) for piece in self.pieces)


def _piece_size(piece: Piece) -> int:
    """About the bytes ``piece`` holds in memory (its text, logprobs and tool calls)."""
    logprobs = sum(
        LOGPROB_OVERHEAD + len(lp.token.encode()) + sum(len(t.encode()) for t, _ in lp.top)
        for lp in piece.logprobs
    )
    calls = sum(
        len((c.id or "").encode()) + len((c.name or "").encode()) + len(c.arguments.encode())
        for c in piece.tool_calls
    )
    return len(piece.text.encode()) + logprobs + calls


def deterministic(params: GenerateParams) -> bool:
    """Whether asking again gives the same answer: greedy sampling, or a fixed seed."""
    return params.temperature == 0 or params.seed is not None


def cache_key(owner: str, kind: str, revision: str, params: GenerateParams) -> str:
    """The key of ``params`` asked by ``owner`` (a user, or "*" for entries all share)."""
    canonical = json.dumps(
        {"owner": owner, "kind": kind, "revision": revision, "params": params.to_wire()},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def advertised_revision(table: PeerTable, model: str) -> str:
    """The model's build as its nodes advertise it (weight type and context length, per
    node that serves it); nodes that load a different build change the key."""
    builds = sorted(
        {
            f"{m.dtype}/{m.context_length}"
            for entry in table.entries.values()
            for m in entry.record.models
            if m.id == model
        }
    )
    return ",".join(builds)


class ResponseCache:
    """Answers by key, at most ``max_bytes`` of them, each for ``ttl`` seconds."""

    def __init__(
        self, max_bytes: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.size = 0
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Answer]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Answer | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, answer = found
        if expires <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return answer

    def put(self, key: str, answer: Answer) -> None:
        """Keep ``answer``; the least recently used go to make room. An answer larger than
        the whole cache is not kept."""
        if answer.size > self.max_bytes or self.ttl <= 0:
            return
        self._drop(key)
        while self.size + answer.size > self.max_bytes:
            self._drop(next(iter(self._entries)))
        self._entries[key] = (self._clock() + self.ttl, answer)
        self.size += answer.size

    def _drop(self, key: str) -> None:
        found = self._entries.pop(key, None)
        if found is not None:
            self.size -= found[1].size
