"""Parameters and answers of embedding calls, as they travel between gateway and node.

A call carries its inputs either as texts or as token arrays (the model's own input ids,
taken as given), never both, within caps that keep the request inside one RPC frame. The
node answers with its vectors as little-endian float32 bytes, a batch per chunk (so a call
of many long vectors never needs one oversized frame), and ends with the vectors'
dimensions and the tokens it read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Self

from protocols.errors import RemoteProtocolError
from protocols.generation import PeerParams
from protocols.validate import exact, required

MAX_EMBED_INPUTS = 256
# What one input, and one call, may carry: well inside a 4 MiB frame even at 4 bytes a
# character, and 5 bytes a token id.
MAX_EMBED_INPUT_CHARS = 32_768
MAX_EMBED_TOTAL_CHARS = 800_000
MAX_EMBED_TOKENS = 8192
MAX_EMBED_TOTAL_TOKENS = 400_000
MAX_TOKEN_ID = 2**31 - 1
MAX_EMBED_DIMENSIONS = 16_384
FLOAT_BYTES = 4


@dataclass(frozen=True)
class EmbedParams(PeerParams):
    """One embedding call: a vector for each of ``texts`` (or of ``tokens``), cut to its
    first ``dimensions`` and normalised again when that is set."""

    _WHAT = "embedding"

    model: str
    texts: list[str] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)
    dimensions: int | None = None

    @property
    def count(self) -> int:
        return len(self.texts) or len(self.tokens)

    def _problem(self) -> str | None:
        if bool(self.texts) == bool(self.tokens):
            return "input must not be empty"
        if self.count > MAX_EMBED_INPUTS:
            return f"input holds at most {MAX_EMBED_INPUTS} items"
        for i, text in enumerate(self.texts):
            if not text:
                return f"input[{i}] is an empty string"
            if len(text) > MAX_EMBED_INPUT_CHARS:
                return f"input[{i}] is longer than {MAX_EMBED_INPUT_CHARS} characters"
        if sum(map(len, self.texts)) > MAX_EMBED_TOTAL_CHARS:
            return f"input is longer than {MAX_EMBED_TOTAL_CHARS} characters in all"
        for i, ids in enumerate(self.tokens):
            if not ids:
                return f"input[{i}] is an empty token array"
            if len(ids) > MAX_EMBED_TOKENS:
                return f"input[{i}] is longer than {MAX_EMBED_TOKENS} tokens"
            if any(not 0 <= t <= MAX_TOKEN_ID for t in ids):
                return f"input[{i}] holds a token id out of range"
        if sum(map(len, self.tokens)) > MAX_EMBED_TOTAL_TOKENS:
            return f"input is longer than {MAX_EMBED_TOTAL_TOKENS} tokens in all"
        if self.dimensions is not None and not 1 <= self.dimensions <= MAX_EMBED_DIMENSIONS:
            return f"dimensions must be between 1 and {MAX_EMBED_DIMENSIONS}"
        return None

    @classmethod
    def _parse(cls, body: dict[str, Any]) -> Self:
        dimensions = body.get("dimensions")
        return cls(
            model=required(body, "model", str),
            texts=[exact(t, str, "texts") for t in required(body, "texts", list)],
            tokens=[
                [exact(t, int, "tokens") for t in exact(ids, list, "tokens")]
                for ids in required(body, "tokens", list)
            ],
            dimensions=None if dimensions is None else exact(dimensions, int, "dimensions"),
        )


@dataclass(frozen=True)
class Vectors:
    """A batch of ``count`` vectors, packed as little-endian float32, one after another."""

    data: bytes
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or len(self.data) % (self.count * FLOAT_BYTES):
            raise ValueError("vectors must be whole float32 rows, at least one")

    @property
    def dimensions(self) -> int:
        return len(self.data) // (self.count * FLOAT_BYTES)

    def rows(self) -> list[bytes]:
        size = self.dimensions * FLOAT_BYTES
        return [self.data[i * size : (i + 1) * size] for i in range(self.count)]

    def to_wire(self) -> dict[str, Any]:
        return {"vectors": self.data, "count": self.count}

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Vectors:
        try:
            return cls(required(body, "vectors", bytes), required(body, "count", int))
        except (TypeError, ValueError) as exc:
            raise RemoteProtocolError(f"bad vectors: {exc}") from exc


def floats(row: bytes) -> list[float]:
    """One packed vector as Python floats."""
    return list(struct.unpack(f"<{len(row) // FLOAT_BYTES}f", row))
