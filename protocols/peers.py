"""The swarm's peers as a person or a script sees them: one typed status per peer and its
JSON form (``GET /v1/peers`` and ``bitinglip peers --json``).

No I/O here: the gateway builds statuses from its peer table, the CLI from a gateway's
answer or from what it found in the swarm itself; ``gateway.client.peer_view`` renders them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

from protocols.records import Load, NodeRecord
from protocols.validate import exact, finite, flat

T = TypeVar("T")

ROLE_ORDER = {"gateway": 0, "node": 1, "client": 2}


@dataclass(frozen=True)
class PeerHardware:
    backend: str
    device_name: str
    memory: str  # VRAM, RAM or unified, as the node's record says
    memory_total: int
    memory_free: int


@dataclass(frozen=True)
class PeerModel:
    id: str
    task: str
    dtype: str
    state: str


@dataclass(frozen=True)
class PeerLoad:
    inflight: int
    queued: int
    capacity: int
    tokens_per_s: float
    draining: bool

    @property
    def busy(self) -> float:
        """Work in hand per slot: 0 idle, 1 full, above 1 queueing."""
        return (self.inflight + self.queued) / max(1, self.capacity)


@dataclass(frozen=True)
class PeerStatus:
    """One peer as the swarm sees it now. ``last_seen`` is in seconds ago."""

    peer_id: str
    role: str
    addrs: list[str]
    version: str
    hardware: PeerHardware | None
    models: list[PeerModel]
    load: PeerLoad | None
    last_seen: float
    healthy: bool
    rtt_ms: float | None = None
    # Whether the gateway reaches this node through a relay only (it is behind a NAT and
    # no direct connection has been made); None: not connected, or the gateway itself.
    relayed: bool | None = None

    @classmethod
    def from_record(
        cls,
        record: NodeRecord,
        load: Load | None,
        last_seen: float,
        healthy: bool,
        rtt_ms: float | None = None,
        relayed: bool | None = None,
    ) -> PeerStatus:
        """A peer's status from its verified record and, for a node, its live load."""
        base = cls(
            peer_id=record.peer_id,
            role=record.role,
            addrs=list(record.addrs),
            version=record.version,
            hardware=None,
            models=[],
            load=None,
            last_seen=max(0.0, last_seen),
            healthy=healthy,
            rtt_ms=rtt_ms,
            relayed=relayed,
        )
        if record.role != "node":  # a gateway's record has no hardware or load to speak of
            return base
        live = load or record.load
        hw = record.hardware
        return replace(
            base,
            # The live load carries fresher free memory than the record.
            hardware=PeerHardware(
                hw.backend, hw.device_name, hw.memory, hw.memory_total, live.memory_free
            ),
            models=[
                PeerModel(m.id, m.task, m.dtype, "draining" if live.draining else m.state)
                for m in record.models
            ],
            load=PeerLoad(
                live.inflight, live.queued, live.capacity, live.tokens_per_s, live.draining
            ),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, body: Any) -> PeerStatus:
        """Parse one entry of a gateway's answer; ``ValueError`` if it is malformed."""
        if not isinstance(body, dict):
            raise ValueError("a peer entry must be an object")
        hardware, load, rtt = body.get("hardware"), body.get("load"), body.get("rtt_ms")
        relayed = body.get("relayed")
        models = exact(body.get("models"), list, "models")
        addrs = exact(body.get("addrs"), list, "addrs")
        return cls(
            peer_id=exact(body.get("peer_id"), str, "peer_id"),
            role=exact(body.get("role"), str, "role"),
            addrs=[a for a in addrs if isinstance(a, str)],
            version=exact(body.get("version"), str, "version"),
            hardware=None if hardware is None else flat(PeerHardware, hardware),
            models=[flat(PeerModel, m) for m in models],
            load=None if load is None else flat(PeerLoad, load),
            last_seen=finite(body.get("last_seen"), "last_seen"),
            healthy=exact(body.get("healthy"), bool, "healthy"),
            rtt_ms=None if rtt is None else finite(rtt, "rtt_ms"),
            relayed=None if relayed is None else exact(relayed, bool, "relayed"),
        )


@dataclass(frozen=True)
class Summary:
    peers: int
    nodes: int
    gateways: int
    healthy: int
    gpus: int
    # The memory totals are over the GPU nodes, named by their kind (VRAM, unified or both);
    # a CPU node's RAM counts only where there are no GPUs, so RAM is never called VRAM.
    memory: str  # "" without nodes
    memory_total: int
    memory_free: int
    models: dict[str, int]  # model id -> healthy peers with it ready

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sort_key(peer: PeerStatus) -> tuple[int, list[str], bool, float, str]:
    """Gateways first, then by the models served, then least busy first.

    A peer that does not answer goes after those that do: its load is not known.
    """
    role = ROLE_ORDER.get(peer.role, len(ROLE_ORDER))
    busy = peer.load.busy if peer.load is not None else 0.0
    return role, sorted(m.id for m in peer.models), not peer.healthy, busy, peer.peer_id


def arrange(peers: Iterable[PeerStatus], model: str | None = None) -> list[PeerStatus]:
    """The peers to show, in order; with ``model``, only those that list it."""
    shown = [p for p in peers if model is None or any(m.id == model for m in p.models)]
    return sorted(shown, key=sort_key)


def summarize(peers: Sequence[PeerStatus]) -> Summary:
    nodes = [p.hardware for p in peers if p.hardware is not None]
    gpus = [h for h in nodes if h.backend != "cpu"]
    counted = gpus or nodes
    models: dict[str, int] = {}
    for peer in peers:
        if peer.healthy and not (peer.load is not None and peer.load.draining):
            for m in peer.models:
                if m.state == "ready":
                    models[m.id] = models.get(m.id, 0) + 1
    return Summary(
        peers=len(peers),
        nodes=sum(p.role == "node" for p in peers),
        gateways=sum(p.role == "gateway" for p in peers),
        healthy=sum(p.healthy for p in peers),
        gpus=len(gpus),
        memory="/".join(sorted({h.memory for h in counted})),
        memory_total=sum(h.memory_total for h in counted),
        memory_free=sum(h.memory_free for h in counted),
        models=dict(sorted(models.items())),
    )


def to_json(peers: Sequence[PeerStatus]) -> dict[str, Any]:
    return {"peers": [p.to_json() for p in peers], "summary": summarize(peers).to_json()}
