"""Every decoder and validator in ``protocols/`` against arbitrary input: whatever a peer
sends, the only exception is the protocol's own (``RemoteProtocolError``, or ``ValueError``
where the function says so), never a ``TypeError``, ``KeyError`` or a crash deeper down.

Inputs are both random and near misses: valid messages with one field replaced, removed or
added, and envelopes correctly signed around garbage (a signature must not be what stands
between garbage and a crash).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keys.files import raw_public
from protocols import (
    Certificate,
    ChatMessage,
    FrameDecoder,
    GenerateParams,
    Hardware,
    ImageParams,
    Load,
    MessageDecoder,
    ModelInfo,
    NodeRecord,
    PeerStatus,
    RemoteProtocolError,
    WatchUpdate,
    decode,
    encode_frame,
    event_from_wire,
    issue_certificate,
    peer_id_of,
    record_seq,
    sign_record,
    verify_certificate,
    verify_record,
)
from protocols.codec import pack, unpack, unpack_map
from protocols.membership import revocations_seq, verify_revocations
from protocols.operator import ModelSpec, Unload
from protocols.records import record_expiry, sign_envelope

settings.register_profile(
    "hostile",
    max_examples=150,
    deadline=None,
    # CI runs the same examples every time: a red build is a bug, not a coin toss.
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("hostile")

OPERATOR = Ed25519PrivateKey.generate()
NODE = Ed25519PrivateKey.generate()
NODE_ID = peer_id_of(raw_public(NODE))
NOW = 1_000_000.0

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
maps = st.dictionaries(st.text(max_size=12), values, max_size=6)


def near_misses(valid: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``valid`` with one field replaced by anything, removed, or one field added."""
    names = sorted(valid)
    replaced = st.tuples(st.sampled_from(names), values).map(lambda kv: valid | {kv[0]: kv[1]})
    removed = st.sampled_from(names).map(lambda k: {n: v for n, v in valid.items() if n != k})
    added = st.tuples(st.text(max_size=8), values).map(lambda kv: valid | {kv[0]: kv[1]})
    return replaced | removed | added | maps


def record_body() -> dict[str, Any]:
    return NodeRecord(
        peer_id=NODE_ID,
        public_key=raw_public(NODE),
        role="node",
        version="1",
        addrs=["/ip4/127.0.0.1/tcp/1"],
        hardware=Hardware("cpu", "cpu", "RAM", 1, 1),
        models=[ModelInfo("m", "text-generation", "float32", 8, 1, "ready")],
        load=Load(0, 0, 1, 0.0, 1),
        seq=1,
        issued_at=NOW,
        ttl=30.0,
    ).to_dict()


def certificate_body() -> dict[str, Any]:
    return asdict(Certificate(NODE_ID, "node", NOW - 10, NOW + 10))


def refused_only(call: Any, *args: Any, allowed: type[Exception] = RemoteProtocolError) -> None:
    with contextlib.suppress(allowed):
        call(*args)


@given(st.binary(max_size=200))
def test_msgpack_decoding(data: bytes) -> None:
    refused_only(unpack, data)
    refused_only(unpack_map, data)
    refused_only(record_seq, data)


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_framing_and_rpc_frames(chunks: list[bytes]) -> None:
    frames, messages = FrameDecoder(max_frame=256), MessageDecoder(max_frame=256)
    for chunk in chunks:
        refused_only(frames.feed, chunk)
        refused_only(messages.feed, chunk)


@given(
    near_misses({"t": "req", "id": 1, "m": "generate", "p": {}, "to": 5})
    | near_misses({"t": "err", "id": 1, "code": "OVERLOADED", "msg": "full"})
    | near_misses({"t": "hello", "cert": b"x"})
    | near_misses({"t": "chunk", "id": 2, "d": {}})
)
def test_rpc_messages(body: dict[str, Any]) -> None:
    refused_only(decode, pack(body))
    refused_only(MessageDecoder().feed, encode_frame(pack(body)))


@given(near_misses(record_body()))
def test_node_records(body: dict[str, Any]) -> None:
    refused_only(NodeRecord.from_dict, body)


@given(
    near_misses(record_body()["hardware"])
    | near_misses(record_body()["load"])
    | near_misses(record_body()["models"][0])
)
def test_record_parts(part: dict[str, Any]) -> None:
    refused_only(NodeRecord.from_dict, record_body() | {"hardware": part})
    refused_only(NodeRecord.from_dict, record_body() | {"load": part})
    refused_only(NodeRecord.from_dict, record_body() | {"models": [part]})
    refused_only(Load.from_update, part)
    refused_only(WatchUpdate.from_wire, part | {"record_seq": 1})


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(near_misses(certificate_body()), near_misses(record_body()))
def test_signed_envelopes_around_garbage(cert: dict[str, Any], record: dict[str, Any]) -> None:
    """Correct signatures around garbage: what is signed is still checked like peer input."""
    cert_blob = sign_envelope(OPERATOR, pack(cert))
    refused_only(verify_certificate, cert_blob, raw_public(OPERATOR), NOW)
    good_cert = issue_certificate(OPERATOR, Certificate(**certificate_body()))
    envelope = pack({"record": sign_envelope(NODE, pack(record)), "cert": good_cert})
    refused_only(verify_record, envelope, raw_public(OPERATOR), NOW)
    forged = pack({"record": sign_envelope(NODE, pack(record)), "cert": cert_blob})
    refused_only(verify_record, forged, raw_public(OPERATOR), NOW)
    refused_only(record_seq, envelope)


@given(st.binary(max_size=300), st.binary(max_size=40))
def test_envelopes_from_random_bytes(blob: bytes, key: bytes) -> None:
    refused_only(verify_certificate, blob, key, NOW)
    refused_only(verify_record, blob, key, NOW)
    refused_only(verify_revocations, blob, key)
    refused_only(record_expiry, blob)
    refused_only(revocations_seq, blob)


@given(maps | values)
def test_signed_revocation_lists_around_garbage(body: Any) -> None:
    blob = sign_envelope(OPERATOR, pack(body))
    refused_only(verify_revocations, blob, raw_public(OPERATOR))
    refused_only(revocations_seq, blob)


def test_a_genuine_record_still_verifies() -> None:
    """The near misses above start from real messages: check they really are valid."""
    record = NodeRecord.from_dict(record_body())
    cert = issue_certificate(OPERATOR, Certificate(**certificate_body()))
    assert verify_record(sign_record(NODE, record, cert), raw_public(OPERATOR), NOW) == record


@given(
    near_misses({"kind": "usage", "user": "a", "requests": 1, "tokens": 2, "images": 0, "at": 1.0})
    | near_misses({"kind": "revoke", "jti": "x", "expires_at": 5.0})
)
def test_gateway_events(body: dict[str, Any]) -> None:
    refused_only(event_from_wire, body)


@given(
    near_misses(GenerateParams(model="m", prompt="hi", stop=["x"]).to_wire())
    | near_misses(GenerateParams(model="m", messages=[ChatMessage("user", "hi")], seed=3).to_wire())
    | near_misses(ImageParams(model="m", prompt="a cat").to_wire())
    | near_misses(ModelSpec("m", "float16", 2, "cuda:0").to_wire())
    | near_misses(Unload("m", 3.0).to_wire())
    | values
)
def test_call_parameters(body: Any) -> None:
    for parse in (
        GenerateParams.from_wire,
        ImageParams.from_wire,
        ModelSpec.from_wire,
        Unload.from_wire,
    ):
        refused_only(parse, body)


@given(values | maps)
def test_peer_entries_from_a_gateway(body: Any) -> None:
    refused_only(PeerStatus.from_json, body, allowed=ValueError)
