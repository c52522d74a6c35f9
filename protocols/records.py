"""Signed self-descriptions and membership certificates.

A node publishes a ``NodeRecord`` in the DHT under ``node_key(peer_id)``. The value is a
``SignedEnvelope``: the record's msgpack bytes, the node's Ed25519 signature over them,
and the operator-signed ``Certificate`` that admits the node to the swarm. A verifier
needs only the operator's public key: the certificate binds the peer id to a role, the
record's public key must hash to the same peer id, and the record must not be expired.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from protocols.codec import pack, unpack_map
from protocols.errors import RemoteProtocolError
from protocols.identity import peer_id_of
from protocols.validate import exact, finite, flat, required

if TYPE_CHECKING:
    # Imported where a signature is checked: a process that only reads records' fields
    # (a worker measuring its GPU) need not have cryptography installed.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

T = TypeVar("T")

NODE_KEY_PREFIX = "/bitinglip/node/"
MODEL_KEY_PREFIX = "/bitinglip/model/"
# Provided by every gateway: nodes look its providers up to reach the gateways.
GATEWAYS_KEY = "/bitinglip/gateways"
# Provided by every peer that relays for others: peers behind a NAT reserve slots at them.
RELAYS_KEY = "/bitinglip/relays"
# Provided by every peer reached through relays: nobody can dial it to put it in their
# routing table, so those who list the swarm's nodes look here too.
RELAYED_KEY = "/bitinglip/relayed"
DHT_NAMESPACE = "bitinglip"

ROLES = ("node", "gateway", "client", "operator")
TASKS = (
    "text-generation",
    "text-to-image",
    "text-to-speech",
    "speech-to-text",
    "image-to-text",
    "embedding",
)
MODEL_STATES = ("loading", "ready", "draining", "failed")


def node_key(peer_id: str) -> str:
    return NODE_KEY_PREFIX + peer_id


def model_key(model_id: str) -> str:
    return MODEL_KEY_PREFIX + model_id


@dataclass(frozen=True)
class Hardware:
    backend: str  # cuda | directml | mps | cpu
    device_name: str
    # What the memory below is: "VRAM" on a GPU, "RAM" on a CPU host, "unified" on Apple silicon.
    memory: str
    memory_total: int
    memory_free: int
    torch: str = ""  # torch version, "" where it is not installed
    transformers: str = ""  # transformers version, "" where not installed
    compute_capability: str = ""  # CUDA only, e.g. "8.9"


@dataclass(frozen=True)
class ModelInfo:
    id: str
    task: str
    dtype: str
    context_length: int
    max_batch: int
    state: str
    # What the model can do beyond its task, for clients choosing one (``/v1/models``):
    # a chat template, one that reads tool definitions, decoding that can be held to a
    # JSON schema; an embedding model's vector size, and whether it was trained to be cut
    # shorter (Matryoshka).
    chat: bool = False
    tools: bool = False
    constrained: bool = False
    dimensions: int = 0
    matryoshka: bool = False

    def capabilities(self) -> dict[str, bool]:
        """What a client may ask of this model, by feature (``/v1/models``)."""
        text = self.task == "text-generation"
        return {
            # A picture reader answers chats too: with pictures, or text alone.
            "chat": (text and self.chat) or self.task == "image-to-text",
            "completion": text,
            "tools": text and self.tools,
            "json": text and self.constrained,
            "embeddings": self.task == "embedding",
            "dimensions": self.task == "embedding" and self.matryoshka,
            "vision": self.task == "image-to-text",
            "speech": self.task == "text-to-speech",
            "transcription": self.task == "speech-to-text",
            "image": self.task == "text-to-image",
        }


@dataclass(frozen=True)
class Load:
    """Live load: how busy a node is right now."""

    inflight: int
    queued: int
    capacity: int
    tokens_per_s: float
    memory_free: int
    draining: bool = False

    @classmethod
    def from_update(cls, update: Mapping[str, Any]) -> Load:
        """The load in a node's ``watch`` update or ``status`` answer (other fields are left
        alone). A missing field reads as idle; a malformed one is a ``RemoteProtocolError``."""
        values = {name: update.get(name, default) for name, default in _IDLE.items()}
        try:
            return flat(cls, values)
        except ValueError as exc:
            raise RemoteProtocolError(f"malformed load: {exc}") from exc


@dataclass(frozen=True)
class ModelLoad:
    """One model's share of a node's load: its slots, the calls on them, the room in its
    own short queue (``max_queue``), so gateways can tell how many more it takes, and its
    measured speed (tokens a second, every slot together; 0: not measured)."""

    inflight: int
    queued: int
    capacity: int
    max_queue: int
    tokens_per_s: float = 0.0

    @property
    def room(self) -> int:
        """Calls it takes now before refusing with OVERLOADED."""
        return max(0, self.capacity + self.max_queue - self.inflight - self.queued)


_IDLE: dict[str, Any] = {
    "inflight": 0,
    "queued": 0,
    "capacity": 1,
    "tokens_per_s": 0.0,
    "memory_free": 0,
    "draining": False,
}


@dataclass(frozen=True)
class NodeRecord:
    peer_id: str
    public_key: bytes
    role: str
    version: str
    addrs: list[str]
    hardware: Hardware
    models: list[ModelInfo]
    load: Load
    seq: int
    issued_at: float
    ttl: float
    # Models this node would load if they were wanted (its placement policy allows them and
    # it has them on disk, or may fetch them): a gateway queues calls for them.
    can_load: list[str] = field(default_factory=list)

    @property
    def expires_at(self) -> float:
        return self.issued_at + self.ttl

    def ready_models(self) -> list[str]:
        return [m.id for m in self.models if m.state == "ready"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> NodeRecord:
        try:
            record = cls(
                peer_id=exact(body["peer_id"], str, "peer_id"),
                public_key=exact(body["public_key"], bytes, "public_key"),
                role=exact(body["role"], str, "role"),
                version=exact(body["version"], str, "version"),
                addrs=[exact(a, str, "addrs") for a in body["addrs"]],
                hardware=flat(Hardware, body["hardware"]),
                models=[flat(ModelInfo, m) for m in body["models"]],
                load=flat(Load, body["load"]),
                seq=exact(body["seq"], int, "seq"),
                issued_at=finite(body["issued_at"], "issued_at"),
                ttl=finite(body["ttl"], "ttl"),
                can_load=[
                    exact(m, str, "can_load")
                    for m in exact(body.get("can_load", []), list, "can_load")
                ],
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise RemoteProtocolError(f"malformed node record: {exc}") from exc
        if record.role not in ROLES or any(
            m.task not in TASKS or m.state not in MODEL_STATES for m in record.models
        ):
            raise RemoteProtocolError("node record has an unknown role, task or state")
        return record


@dataclass(frozen=True)
class Certificate:
    """The operator's statement that ``peer_id`` may join the swarm as ``role``."""

    peer_id: str
    role: str
    issued_at: float
    expires_at: float
    extra: dict[str, Any] = field(default_factory=dict)


def sign_envelope(key: Ed25519PrivateKey, body: bytes) -> bytes:
    """``body`` with ``key``'s signature over it."""
    return pack({"body": body, "sig": key.sign(body)})


def open_envelope(blob: bytes, public_key: bytes) -> bytes:
    """The body of a ``sign_envelope`` blob, if ``public_key`` signed it."""
    envelope = unpack_map(blob)
    body, sig = envelope.get("body"), envelope.get("sig")
    if not isinstance(body, bytes) or not isinstance(sig, bytes):
        raise RemoteProtocolError("malformed signed envelope")
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(sig, body)
    except (InvalidSignature, ValueError) as exc:
        raise RemoteProtocolError("bad signature") from exc
    return body


def issue_certificate(operator: Ed25519PrivateKey, cert: Certificate) -> bytes:
    """Sign a membership certificate with the operator key."""
    return sign_envelope(operator, pack(asdict(cert)))


def verify_certificate(blob: bytes, operator_public: bytes, now: float) -> Certificate:
    """Check a certificate's signature and validity window; return it."""
    cert = read_certificate(blob, operator_public)
    if not cert.issued_at - 300 <= now <= cert.expires_at:
        raise RemoteProtocolError("certificate is expired or not yet valid")
    return cert


def read_certificate(blob: bytes, operator_public: bytes) -> Certificate:
    """A certificate the operator signed, whether or not it is valid now."""
    body = unpack_map(open_envelope(blob, operator_public))
    unknown = set(body) - {"peer_id", "role", "issued_at", "expires_at", "extra"}
    try:
        if unknown:
            raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
        cert = Certificate(
            peer_id=required(body, "peer_id", str),
            role=required(body, "role", str),
            issued_at=finite(body.get("issued_at"), "issued_at"),
            expires_at=finite(body.get("expires_at"), "expires_at"),
            extra=exact(body.get("extra", {}), dict, "extra"),
        )
    except ValueError as exc:
        raise RemoteProtocolError(f"malformed certificate: {exc}") from exc
    if cert.role not in ROLES:
        raise RemoteProtocolError(f"certificate for unknown role {cert.role!r}")
    return cert


def sign_record(node_key_: Ed25519PrivateKey, record: NodeRecord, certificate: bytes) -> bytes:
    """Build the DHT value of a node record: signed by the node, carrying its certificate."""
    return pack({"record": sign_envelope(node_key_, pack(record.to_dict())), "cert": certificate})


def verify_record(
    blob: bytes, operator_public: bytes, now: float, key: str | None = None
) -> NodeRecord:
    """Verify a DHT value built by ``sign_record``; return the record it carries.

    Raises ``RemoteProtocolError`` unless the record is signed by the key of the peer it
    names, that peer holds a valid certificate for the same role, the record has not
    expired, and (when given) ``key`` is that peer's DHT key.
    """
    outer = unpack_map(blob)
    signed, cert_blob = outer.get("record"), outer.get("cert")
    if not isinstance(signed, bytes) or not isinstance(cert_blob, bytes):
        raise RemoteProtocolError("malformed record envelope")
    inner = unpack_map(signed).get("body")
    if not isinstance(inner, bytes):
        raise RemoteProtocolError("malformed record envelope")
    claimed = NodeRecord.from_dict(unpack_map(inner))
    open_envelope(signed, claimed.public_key)
    if peer_id_of(claimed.public_key) != claimed.peer_id:
        raise RemoteProtocolError("record public key does not match its peer id")
    cert = verify_certificate(cert_blob, operator_public, now)
    if cert.peer_id != claimed.peer_id or cert.role != claimed.role:
        raise RemoteProtocolError("certificate does not admit this peer in this role")
    if key is not None and key != node_key(claimed.peer_id):
        raise RemoteProtocolError("record stored under another peer's key")
    if now > claimed.expires_at:
        raise RemoteProtocolError("record has expired")
    return claimed


def record_seq(blob: bytes) -> int:
    """The seq of a record without verifying it (for picking the newest of valid values)."""
    try:
        signed = unpack_map(unpack_map(blob)["record"])
        return exact(unpack_map(signed["body"])["seq"], int, "seq")
    except (KeyError, TypeError, ValueError, RemoteProtocolError):
        return -1


def record_expiry(blob: bytes) -> float:
    """When a record expires, without verifying it (for dropping dead records from a store
    that verified them on the way in); 0 if it cannot be read."""
    try:
        signed = unpack_map(unpack_map(blob)["record"])
        return NodeRecord.from_dict(unpack_map(signed["body"])).expires_at
    except (KeyError, TypeError, ValueError, RemoteProtocolError):
        return 0.0
