"""What an operator asks of a running node: load a model, unload one.

``ModelSpec`` is also how a node's config file lists the models to load at start, so a
model loaded by hand and one loaded from the config are described the same way. Only a
caller whose certificate gives it the ``operator`` role may send these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from protocols.errors import RemoteProtocolError
from protocols.validate import exact, finite, required

DTYPES = ("float32", "float16", "bfloat16")
MAX_MODEL_ID_CHARS = 512
MAX_SLOTS = 1024
MAX_DRAIN_SECONDS = 3600.0


@dataclass(frozen=True)
class ModelSpec:
    """A model to load: its id (a Hugging Face id or a local path) and how to run it.

    ``dtype`` "" is the device's default; ``slots`` 0 sizes the batch from the model and
    the free memory; ``device`` "" is the node's own device (e.g. ``cuda:1`` picks another).
    """

    id: str
    dtype: str = ""
    slots: int = 0
    device: str = ""

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ValueError(problem)

    def _problem(self) -> str | None:
        if not self.id or len(self.id) > MAX_MODEL_ID_CHARS:
            return f"a model id is 1 to {MAX_MODEL_ID_CHARS} characters"
        if self.dtype and self.dtype not in DTYPES:
            return f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}"
        if not 0 <= self.slots <= MAX_SLOTS:
            return f"slots should be between 0 (automatic) and {MAX_SLOTS}"
        return None

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, body: Any) -> ModelSpec:
        """A spec sent by a peer; ``RemoteProtocolError`` saying what is wrong."""
        try:
            return cls.from_table(exact(body, dict, "params"))
        except ValueError as exc:
            raise RemoteProtocolError(f"bad model spec: {exc}") from exc

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> ModelSpec:
        """A spec from a map (a config table or a wire map); ``ValueError`` if wrong."""
        unknown = sorted(set(table) - {"id", "dtype", "slots", "device"})
        if unknown:
            raise ValueError(f"unknown model settings: {', '.join(map(str, unknown))}")
        return cls(
            id=required(table, "id", str),
            dtype=exact(table.get("dtype", ""), str, "dtype"),
            slots=exact(table.get("slots", 0), int, "slots"),
            device=exact(table.get("device", ""), str, "device"),
        )


@dataclass(frozen=True)
class Unload:
    """Take ``model`` out of service: stop routing to it, let its calls finish (for up to
    ``timeout`` seconds, then cancel the rest), free its memory."""

    model: str
    timeout: float = 30.0

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, body: Any) -> Unload:
        try:
            body = exact(body, dict, "params")
            unknown = sorted(set(body) - {"model", "timeout"})
            if unknown:
                raise ValueError(f"unknown fields: {', '.join(map(str, unknown))}")
            timeout = finite(body.get("timeout", 30.0), "timeout")
            if not 0 <= timeout <= MAX_DRAIN_SECONDS:
                raise ValueError(f"timeout should be between 0 and {MAX_DRAIN_SECONDS:g} s")
            return cls(required(body, "model", str), timeout)
        except ValueError as exc:
            raise RemoteProtocolError(f"bad unload request: {exc}") from exc
