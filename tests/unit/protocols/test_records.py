"""Signed records and certificates: the exact reason each bad one is refused, the edges of
validity windows, and how a peer's record map is type-checked field by field."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys.files import raw_public
from protocols import (
    Certificate,
    Hardware,
    Load,
    ModelInfo,
    NodeRecord,
    RemoteProtocolError,
    issue_certificate,
    model_key,
    node_key,
    peer_id_of,
    sign_record,
    verify_certificate,
    verify_record,
)
from protocols.codec import pack

NOW = 1_700_000_000.0
OPERATOR = Ed25519PrivateKey.generate()
OPERATOR_PUBLIC = raw_public(OPERATOR)
NODE = Ed25519PrivateKey.generate()
PEER = peer_id_of(raw_public(NODE))
OTHER = Ed25519PrivateKey.generate()
OTHER_PEER = peer_id_of(raw_public(OTHER))


def cert(
    peer: str = PEER, role: str = "node", issued: float = NOW, expires: float = NOW + 60
) -> bytes:
    return issue_certificate(OPERATOR, Certificate(peer, role, issued, expires))


def record(**changes: Any) -> NodeRecord:
    base = NodeRecord(
        peer_id=PEER,
        public_key=raw_public(NODE),
        role="node",
        version="0.1.0",
        addrs=["/ip4/127.0.0.1/tcp/4001"],
        hardware=Hardware("cpu", "test cpu", "RAM", 8, 4, "2.5.1", "4.57.0"),
        models=[
            ModelInfo("echo", "text-generation", "float32", 2048, 4, "ready"),
            ModelInfo("warm", "text-to-image", "float16", 77, 1, "loading"),
        ],
        load=Load(inflight=1, queued=0, capacity=4, tokens_per_s=12.5, memory_free=0),
        seq=5,
        issued_at=NOW,
        ttl=120.0,
    )
    return replace(base, **changes)


def why(blob: bytes, now: float = NOW, key: str | None = None) -> str:
    with pytest.raises(RemoteProtocolError) as caught:
        verify_record(blob, OPERATOR_PUBLIC, now, key)
    return str(caught.value)


def test_dht_keys() -> None:
    assert node_key("QmPeer") == "/bitinglip/node/QmPeer"
    assert model_key("org/model") == "/bitinglip/model/org/model"


def test_ready_models_are_those_in_the_ready_state() -> None:
    assert record().ready_models() == ["echo"]
    assert record(models=[]).ready_models() == []


def test_expiry_is_issue_time_plus_ttl() -> None:
    assert record(issued_at=100.0, ttl=20.0).expires_at == 120.0


# --- verification -------------------------------------------------------------------------


def test_a_record_verifies_until_the_last_instant_of_its_life() -> None:
    blob = sign_record(NODE, record(), cert(expires=NOW + 1000))
    assert verify_record(blob, OPERATOR_PUBLIC, NOW + 120.0, key=node_key(PEER)) == record()
    assert why(blob, now=NOW + 120.5) == "record has expired"


def test_each_forgery_is_refused_with_its_reason() -> None:
    good = cert()
    assert why(sign_record(OTHER, record(), good)) == "bad signature"
    impostor = record(public_key=raw_public(OTHER))
    assert why(sign_record(OTHER, impostor, good)) == "record public key does not match its peer id"
    assert why(sign_record(NODE, record(), cert(peer=OTHER_PEER))) == (
        "certificate does not admit this peer in this role"
    )
    assert why(sign_record(NODE, record(), cert(role="gateway"))) == (
        "certificate does not admit this peer in this role"
    )
    assert why(sign_record(NODE, record(), good), key=node_key(OTHER_PEER)) == (
        "record stored under another peer's key"
    )


@pytest.mark.parametrize(
    "blob",
    [
        pack({"cert": b"c"}),
        pack({"record": "text", "cert": b"c"}),
        pack({"record": b"x", "cert": None}),
        pack({"record": pack({"sig": b"s"}), "cert": b"c"}),
        pack({"record": pack({"body": "text", "sig": b"s"}), "cert": b"c"}),
    ],
    ids=["no-record", "record-str", "cert-nil", "no-body", "body-str"],
)
def test_a_malformed_envelope_says_so(blob: bytes) -> None:
    assert why(blob) == "malformed record envelope"


@pytest.mark.parametrize(
    "envelope",
    [{"body": b"x"}, {"sig": b"x"}, {"body": "x", "sig": b"x"}, {"body": b"x", "sig": 1}],
    ids=["no-sig", "no-body", "body-str", "sig-int"],
)
def test_a_malformed_signed_envelope_says_so(envelope: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        verify_certificate(pack(envelope), OPERATOR_PUBLIC, NOW)
    assert str(caught.value) == "malformed signed envelope"


def test_a_bad_signature_says_so_and_keeps_the_cause() -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        verify_certificate(cert(), raw_public(OTHER), NOW)
    assert str(caught.value) == "bad signature"
    assert caught.value.__cause__ is not None


def test_certificates_are_valid_from_five_minutes_before_issue_to_expiry_inclusive() -> None:
    blob = cert(issued=NOW, expires=NOW + 60)
    assert verify_certificate(blob, OPERATOR_PUBLIC, NOW - 300).peer_id == PEER
    assert verify_certificate(blob, OPERATOR_PUBLIC, NOW + 60).expires_at == NOW + 60
    for now in (NOW - 300.5, NOW + 60.5):
        with pytest.raises(RemoteProtocolError) as caught:
            verify_certificate(blob, OPERATOR_PUBLIC, now)
        assert str(caught.value) == "certificate is expired or not yet valid"


def _signed_cert(body: dict[str, Any]) -> bytes:
    payload = pack(body)
    return pack({"body": payload, "sig": OPERATOR.sign(payload)})


def test_a_certificate_with_unknown_fields_is_malformed() -> None:
    body = {"peer_id": PEER, "role": "node", "issued_at": NOW, "expires_at": NOW, "x": 1}
    with pytest.raises(RemoteProtocolError) as caught:
        verify_certificate(_signed_cert(body), OPERATOR_PUBLIC, NOW)
    assert str(caught.value) == "malformed certificate: unknown fields: x"


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("peer_id", 7, "peer_id should be a string"),
        ("issued_at", "yesterday", "issued_at should be a finite number"),
        ("expires_at", float("inf"), "expires_at should be a finite number"),
        ("extra", [], "extra should be a map"),
    ],
)
def test_a_certificate_with_a_mistyped_field_names_it(field: str, value: Any, why: str) -> None:
    body = {"peer_id": PEER, "role": "node", "issued_at": NOW, "expires_at": NOW, field: value}
    with pytest.raises(RemoteProtocolError) as caught:
        verify_certificate(_signed_cert(body), OPERATOR_PUBLIC, NOW)
    assert str(caught.value) == f"malformed certificate: {why}"


def test_a_certificate_for_an_unknown_role_names_it() -> None:
    body = {"peer_id": PEER, "role": "root", "issued_at": NOW, "expires_at": NOW}
    with pytest.raises(RemoteProtocolError) as caught:
        verify_certificate(_signed_cert(body), OPERATOR_PUBLIC, NOW)
    assert str(caught.value) == "certificate for unknown role 'root'"


def test_a_certificate_keeps_its_extra_fields() -> None:
    blob = issue_certificate(OPERATOR, Certificate(PEER, "client", NOW, NOW, {"user": "ann"}))
    assert verify_certificate(blob, OPERATOR_PUBLIC, NOW).extra == {"user": "ann"}


# --- a peer's record map ------------------------------------------------------------------


def body(**changes: Any) -> dict[str, Any]:
    return record().to_dict() | changes


def refused(body: dict[str, Any]) -> str:
    with pytest.raises(RemoteProtocolError) as caught:
        NodeRecord.from_dict(body)
    return str(caught.value)


def test_a_record_map_round_trips() -> None:
    assert NodeRecord.from_dict(record().to_dict()) == record()
    gpu = Hardware("cuda", "RTX 4090", "VRAM", 24 << 30, 20 << 30, "2.5.1", "4.57.0", "8.9")
    assert NodeRecord.from_dict(record(hardware=gpu).to_dict()).hardware == gpu


def test_hardware_says_what_its_memory_is() -> None:
    assert body()["hardware"] == {
        "backend": "cpu",
        "device_name": "test cpu",
        "memory": "RAM",
        "memory_total": 8,
        "memory_free": 4,
        "torch": "2.5.1",
        "transformers": "4.57.0",
        "compute_capability": "",
    }
    assert body()["load"]["memory_free"] == 0


def test_hardware_may_omit_versions_but_not_its_memory() -> None:
    hardware = body()["hardware"]
    for name in ("torch", "transformers", "compute_capability"):
        del hardware[name]
    assert NodeRecord.from_dict(body(hardware=hardware)).hardware.torch == ""
    hardware = body()["hardware"]
    del hardware["memory"]
    assert refused(body(hardware=hardware)) == "malformed node record: Hardware.memory is missing"


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("vram_total", "Hardware has unknown fields: vram_total"),
        ("vram_free", "Hardware has unknown fields: vram_free"),
        ("cuda_cores", "Hardware has unknown fields: cuda_cores"),
    ],
)
def test_an_unknown_hardware_field_is_refused(field: str, message: str) -> None:
    hardware = body()["hardware"] | {field: 8}
    assert refused(body(hardware=hardware)) == f"malformed node record: {message}"


def test_an_unknown_load_field_is_refused() -> None:
    load = body()["load"] | {"vram_free": 0}
    assert refused(body(load=load)) == "malformed node record: Load has unknown fields: vram_free"


def test_load_may_omit_draining_but_nothing_else() -> None:
    load = body()["load"]
    del load["draining"]
    assert NodeRecord.from_dict(body(load=load)).load.draining is False
    load = body()["load"]
    del load["capacity"]
    assert refused(body(load=load)) == "malformed node record: Load.capacity is missing"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seq": "5"}, "seq should be an integer"),
        ({"seq": True}, "seq should be an integer"),
        ({"peer_id": b"x"}, "peer_id should be a string"),
        ({"public_key": "ab"}, "public_key should be bytes"),
        ({"role": 1}, "role should be a string"),
        ({"version": None}, "version should be a string"),
        ({"addrs": ["/ip4", 4001]}, "addrs should be a string"),
        ({"hardware": ["cpu"]}, "Hardware should be a map"),
        (
            {"hardware": body()["hardware"] | {"memory_total": "8"}},
            "Hardware.memory_total should be an integer",
        ),
        (
            {"hardware": body()["hardware"] | {"memory_free": 4.0}},
            "Hardware.memory_free should be an integer",
        ),
        ({"hardware": body()["hardware"] | {"memory": 1}}, "Hardware.memory should be a string"),
        ({"hardware": body()["hardware"] | {"torch": 2.5}}, "Hardware.torch should be a string"),
        (
            {"hardware": body()["hardware"] | {"compute_capability": [8, 9]}},
            "Hardware.compute_capability should be a string",
        ),
        ({"load": body()["load"] | {"memory_free": -0.5}}, "Load.memory_free should be an integer"),
        ({"load": body()["load"] | {"inflight": True}}, "Load.inflight should be an integer"),
        ({"load": body()["load"] | {"draining": 1}}, "Load.draining should be a boolean"),
        (
            {"load": body()["load"] | {"tokens_per_s": float("inf")}},
            "Load.tokens_per_s should be a finite number",
        ),
        (
            {"load": body()["load"] | {"tokens_per_s": float("nan")}},
            "Load.tokens_per_s should be a finite number",
        ),
        ({"issued_at": float("inf")}, "issued_at should be a finite number"),
        ({"ttl": float("nan")}, "ttl should be a finite number"),
        ({"issued_at": True}, "issued_at should be a finite number"),
        ({"ttl": "120"}, "ttl should be a finite number"),
        ({"ttl": None}, "ttl should be a finite number"),
    ],
)
def test_a_mistyped_field_is_named(changes: dict[str, Any], message: str) -> None:
    assert refused(body(**changes)) == f"malformed node record: {message}"


def test_load_numbers_may_be_integers_where_floats_are_meant() -> None:
    parsed = NodeRecord.from_dict(body(load=body()["load"] | {"tokens_per_s": 3}, ttl=60))
    assert parsed.load.tokens_per_s == 3
    assert parsed.ttl == 60.0 and type(parsed.ttl) is float


@pytest.mark.parametrize(
    "changes",
    [
        {"role": "admin"},
        {"models": [ModelInfo("m", "text-to-video", "f", 1, 1, "ready").__dict__]},
        {"models": [ModelInfo("m", "text-generation", "f", 1, 1, "sleeping").__dict__]},
    ],
    ids=["role", "task", "state"],
)
def test_unknown_role_task_or_state_is_refused(changes: dict[str, Any]) -> None:
    assert refused(body(**changes)) == "node record has an unknown role, task or state"


def test_peer_ids_need_thirty_two_byte_keys() -> None:
    with pytest.raises(ValueError) as caught:
        peer_id_of(b"\x01" * 33)
    assert str(caught.value) == "an Ed25519 public key has 32 bytes"


def test_load_from_a_watch_update_or_a_status_answer() -> None:
    update = {"inflight": 2, "queued": 1, "capacity": 8, "tokens_per_s": 12.5,
              "memory_free": 1 << 30, "draining": True, "record_seq": 7}  # fmt: skip
    assert Load.from_update(update) == Load(2, 1, 8, 12.5, 1 << 30, True)
    assert Load.from_update({}) == Load(0, 0, 1, 0.0, 0, False)  # missing reads as idle
    assert Load.from_update({"tokens_per_s": 3}).tokens_per_s == 3.0
    for bad, says in (
        ({"inflight": "2"}, "malformed load: Load.inflight should be an integer"),
        ({"draining": 1}, "malformed load: Load.draining should be a boolean"),
        ({"tokens_per_s": float("nan")}, "malformed load: Load.tokens_per_s should be a finite"),
    ):
        with pytest.raises(RemoteProtocolError, match=says):
            Load.from_update(bad)
