"""Pure tests of the sans-IO wire protocols: framing, RPC frames, generate params, records.

No I/O: bytes in, values out. Chunking is explored exhaustively for small streams and
with a seeded random generator for larger ones, so every run checks the same cases.
"""

from __future__ import annotations

import itertools
import math
import random
import struct
from dataclasses import dataclass, replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p.crypto.ed25519 import Ed25519PrivateKey as Libp2pPrivateKey
from libp2p.peer.id import ID

from keys.files import raw_private, raw_public
from protocols import (
    DEFAULT_MAX_FRAME,
    Cancel,
    Certificate,
    ChatMessage,
    Chunk,
    End,
    Error,
    ErrorCode,
    FrameDecoder,
    FrameTooLarge,
    GenerateParams,
    Hardware,
    Hello,
    Load,
    LocalProtocolError,
    Message,
    MessageDecoder,
    ModelInfo,
    NodeRecord,
    RemoteProtocolError,
    Request,
    decode,
    encode,
    encode_frame,
    issue_certificate,
    node_key,
    peer_id_of,
    record_seq,
    sign_record,
    verify_certificate,
    verify_record,
)
from protocols.codec import pack, unpack_map
from protocols.generation import MAX_NEW_TOKENS, MAX_PROMPT_CHARS, MAX_STOP_SEQUENCES

# --- framing ------------------------------------------------------------------------------


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _feed_all(decoder: FrameDecoder, pieces: list[bytes]) -> list[bytes]:
    return [frame for piece in pieces for frame in decoder.feed(piece)]


def _random_payloads(rng: random.Random) -> list[bytes]:
    sizes = [rng.choice([0, 1, 3, 4, 5, rng.randrange(0, 600)]) for _ in range(rng.randrange(1, 6))]
    return [rng.randbytes(size) for size in sizes]


def test_frame_layout_is_big_endian_length_then_payload() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"


def test_framing_round_trips_at_every_single_and_double_split() -> None:
    payloads = [b"hello", b"", b"\x00\x00\x00\x01", b"world!"]
    stream = b"".join(encode_frame(p) for p in payloads)
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            decoder = FrameDecoder()
            assert _feed_all(decoder, _split(stream, [i, j])) == payloads
            assert decoder.pending == 0


def test_framing_round_trips_byte_by_byte() -> None:
    payloads = [b"a" * 10, b"", b"xyz"]
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder()
    assert _feed_all(decoder, [stream[i : i + 1] for i in range(len(stream))]) == payloads


@pytest.mark.parametrize("seed", range(200))
def test_framing_round_trips_under_random_chunking(seed: int) -> None:
    rng = random.Random(seed)
    payloads = _random_payloads(rng)
    stream = b"".join(encode_frame(p) for p in payloads)
    cuts = [rng.randrange(len(stream) + 1) for _ in range(rng.randrange(0, 12))]
    decoder = FrameDecoder()
    assert _feed_all(decoder, _split(stream, cuts)) == payloads
    assert decoder.pending == 0


def test_partial_frame_is_held_and_counted_as_pending() -> None:
    decoder = FrameDecoder()
    data = encode_frame(b"abcdef")
    assert decoder.feed(data[:7]) == []
    assert decoder.pending == 7
    assert decoder.feed(data[7:]) == [b"abcdef"]
    assert decoder.pending == 0


def test_frame_of_exactly_max_size_is_accepted() -> None:
    decoder = FrameDecoder(max_frame=8)
    assert decoder.feed(encode_frame(b"12345678", max_frame=8)) == [b"12345678"]


def test_oversized_frame_raises_as_soon_as_its_header_arrives() -> None:
    decoder = FrameDecoder(max_frame=16)
    header = struct.pack(">I", 17)
    assert decoder.feed(header[:3]) == []
    with pytest.raises(FrameTooLarge):
        decoder.feed(header[3:])  # no body byte has been sent


def test_oversized_frame_after_good_ones_still_raises() -> None:
    decoder = FrameDecoder(max_frame=4)
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_frame(b"ok") + struct.pack(">I", 2**32 - 1))


def test_frame_too_large_is_a_remote_protocol_error() -> None:
    # Stream handlers catch RemoteProtocolError to answer the peer and close its stream.
    with pytest.raises(RemoteProtocolError):
        FrameDecoder(max_frame=4).feed(struct.pack(">I", 5))


def test_encode_refuses_oversized_payload() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(b"x" * 9, max_frame=8)
    with pytest.raises(LocalProtocolError):
        encode(Chunk(1, {"text": "x" * 100}), max_frame=32)


# --- rpc messages -------------------------------------------------------------------------

MESSAGES: list[Message] = [
    Hello(b"certificate bytes"),
    Request(1, "generate", {"model": "m", "prompt": "hi", "nested": {"a": [1, 2.5, None]}}),
    Request(2**63 - 1, "watch"),
    Request(7, "generate", {}, timeout_ms=30_000),
    Chunk(3, {"text": "tok"}),
    Chunk(0, {}),
    End(3, {"finish_reason": "stop", "completion_tokens": 4}),
    End(4),
    Error(5, ErrorCode.OVERLOADED, "queue is full"),
    Error(0, ErrorCode.UNAUTHORIZED, ""),
    Cancel(9),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: Message) -> None:
    frame = encode(message)
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    assert decode(frame[4:]) == message
    assert MessageDecoder().feed(frame) == [message]


def test_message_decoder_handles_a_stream_in_any_chunking() -> None:
    stream = b"".join(encode(m) for m in MESSAGES)
    rng = random.Random(1234)
    for _ in range(50):
        cuts = [rng.randrange(len(stream) + 1) for _ in range(rng.randrange(1, 20))]
        decoder = MessageDecoder()
        out = [m for piece in _split(stream, cuts) for m in decoder.feed(piece)]
        assert out == MESSAGES


def test_message_decoder_enforces_its_max_frame() -> None:
    with pytest.raises(FrameTooLarge):
        MessageDecoder(max_frame=8).feed(encode(Chunk(1, {"text": "much too long"})))


def test_every_error_code_round_trips() -> None:
    for code in ErrorCode:
        assert decode(encode(Error(1, code, "m"))[4:]) == Error(1, code, "m")


def test_unknown_error_code_decodes_as_internal() -> None:
    message = decode(pack({"t": "err", "id": 4, "code": "TEAPOT", "msg": "short and stout"}))
    assert message == Error(4, ErrorCode.INTERNAL, "short and stout")


def _req(**changes: Any) -> dict[str, Any]:
    return {"t": "req", "id": 1, "m": "generate", "p": {}, "to": None} | changes


MALFORMED: list[tuple[str, bytes]] = [
    ("not msgpack", b"\xc1"),
    ("truncated msgpack", pack({"t": "cancel", "id": 1})[:-1]),
    ("trailing bytes", pack({"t": "cancel", "id": 1}) + b"\x00"),
    ("empty payload", b""),
    ("a list", pack(["cancel", 1])),
    ("an int", pack(7)),
    ("a string", pack("cancel")),
    ("bytes keys", pack({b"t": "cancel", b"id": 1})),
    ("int keys", pack({1: "cancel"})),
    ("unknown type", pack({"t": "bogus", "id": 1})),
    ("missing type", pack({"id": 1})),
    ("type not a string", pack({"t": 1, "id": 1})),
    ("missing id", pack({"t": "cancel"})),
    ("id as string", pack({"t": "cancel", "id": "1"})),
    ("id as float", pack({"t": "cancel", "id": 1.0})),
    ("id as bool", pack({"t": "cancel", "id": True})),
    ("negative id", pack({"t": "cancel", "id": -1})),
    ("id too large", pack({"t": "cancel", "id": 2**63})),
    ("hello cert as str", pack({"t": "hello", "cert": "text"})),
    ("hello without cert", pack({"t": "hello"})),
    ("req method not str", pack(_req(m=5))),
    ("req params not map", pack(_req(p=[1, 2]))),
    ("req params missing", pack({"t": "req", "id": 1, "m": "x"})),
    ("req timeout zero", pack(_req(to=0))),
    ("req timeout negative", pack(_req(to=-5))),
    ("req timeout string", pack(_req(to="5"))),
    ("req timeout float", pack(_req(to=1.5))),
    ("chunk data not map", pack({"t": "chunk", "id": 1, "d": "text"})),
    ("end data missing", pack({"t": "end", "id": 1})),
    ("err code not str", pack({"t": "err", "id": 1, "code": 3, "msg": "x"})),
    ("err msg missing", pack({"t": "err", "id": 1, "code": "INTERNAL"})),
    ("err id as bool", pack({"t": "err", "id": False, "code": "INTERNAL", "msg": "x"})),
]


@pytest.mark.parametrize(("what", "payload"), MALFORMED, ids=[w for w, _ in MALFORMED])
def test_malformed_payload_is_a_remote_protocol_error(what: str, payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(payload)
    with pytest.raises(RemoteProtocolError):
        MessageDecoder().feed(encode_frame(payload))


def test_bool_timeout_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        decode(pack(_req(to=True)))


# --- generate params ----------------------------------------------------------------------


def _chat(*contents: str, role: str = "user") -> list[ChatMessage]:
    return [ChatMessage(role, c) for c in contents]


def test_generate_params_defaults() -> None:
    params = GenerateParams(model="m", prompt="hi")
    assert (params.max_tokens, params.temperature, params.top_p, params.stop, params.seed) == (
        256,
        None,  # the model's own default
        None,
        [],
        None,
    )
    assert params.prompt_chars() == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prompt": "hi"},
        {"messages": _chat("hi")},
        {"messages": [ChatMessage(r, "x") for r in ("system", "user", "assistant")]},
        {"prompt": "x" * MAX_PROMPT_CHARS},
        {"prompt": "hi", "max_tokens": 1},
        {"prompt": "hi", "max_tokens": MAX_NEW_TOKENS},
        {"prompt": "hi", "temperature": 0.0},
        {"prompt": "hi", "temperature": 2.0},
        {"prompt": "hi", "top_p": 1e-9},
        {"prompt": "hi", "stop": ["a"] * MAX_STOP_SEQUENCES},
        {"prompt": "hi", "seed": 42},
    ],
)
def test_generate_params_accepts_the_edges(kwargs: dict[str, Any]) -> None:
    GenerateParams(model="m", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({}, "exactly one"),
        ({"prompt": "hi", "messages": _chat("hi")}, "exactly one"),
        ({"messages": []}, "must not be empty"),
        ({"messages": _chat("hi", role="robot")}, "roles"),
        ({"messages": _chat("hi", role="developer")}, "roles"),
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "longer than"),
        ({"messages": _chat("x" * MAX_PROMPT_CHARS, "y")}, "longer than"),
        ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": -1}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": MAX_NEW_TOKENS + 1}, "max_tokens"),
        ({"prompt": "hi", "temperature": -0.1}, "temperature"),
        ({"prompt": "hi", "temperature": 2.01}, "temperature"),
        ({"prompt": "hi", "temperature": math.nan}, "temperature"),
        ({"prompt": "hi", "top_p": 0.0}, "top_p"),
        ({"prompt": "hi", "top_p": 1.01}, "top_p"),
        ({"prompt": "hi", "top_p": math.nan}, "top_p"),
        ({"prompt": "hi", "stop": ["a"] * (MAX_STOP_SEQUENCES + 1)}, "stop"),
        ({"prompt": "hi", "stop": [""]}, "stop"),
    ],
)
def test_generate_params_rejects(kwargs: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        GenerateParams(model="m", **kwargs)


@pytest.mark.parametrize(
    "params",
    [
        GenerateParams(model="m", prompt="once upon", max_tokens=7, stop=["\n"], seed=3),
        GenerateParams(
            model="m",
            messages=[ChatMessage("system", "be brief"), ChatMessage("user", "hi")],
            temperature=0.5,
            top_p=0.9,
        ),
    ],
)
def test_generate_params_round_trip_through_the_wire(params: GenerateParams) -> None:
    wire = unpack_map(pack(params.to_wire()))
    assert GenerateParams.from_wire(wire) == params


def _wire(**changes: Any) -> dict[str, Any]:
    return GenerateParams(model="m", prompt="hi").to_wire() | changes


def _without(key: str) -> dict[str, Any]:
    body = _wire()
    del body[key]
    return body


@pytest.mark.parametrize(
    "body",
    [
        _wire(model=1),
        _without("model"),
        _wire(max_tokens="5"),
        _wire(max_tokens=True),
        _wire(max_tokens=5.0),
        _without("max_tokens"),
        _wire(temperature="hot"),
        _wire(temperature=True),
        _wire(temperature=[0.5]),
        _wire(top_p=[1]),
        _wire(top_p=-0.5),
        _wire(stop="\n"),
        _wire(stop=[1]),
        _wire(stop=None),
        _wire(prompt=5),
        _wire(prompt=None),
        _wire(prompt=None, messages="hi"),
        _wire(prompt=None, messages=[["user", "hi"]]),
        _wire(prompt=None, messages=[{"role": 1, "content": "hi"}]),
        _wire(prompt=None, messages=[{"role": "user"}]),
        _wire(prompt=None, messages=[{"role": "user", "content": b"hi"}]),
        _wire(prompt=None, messages=[{"role": "robot", "content": "hi"}]),
        _wire(max_tokens=0),
    ],
)
def test_from_wire_rejects_wrong_types_and_values(body: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError):
        GenerateParams.from_wire(body)


@pytest.mark.parametrize("body", [[], "params", None, 3])
def test_from_wire_rejects_non_maps(body: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        GenerateParams.from_wire(body)


@pytest.mark.parametrize(
    "body",
    [_wire(prompt=["a", "b"]), _wire(prompt=b"hi"), _wire(seed="42"), _wire(seed=1.5)],
    ids=["prompt-list", "prompt-bytes", "seed-str", "seed-float"],
)
def test_from_wire_type_checks_prompt_and_seed(body: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError):
        GenerateParams.from_wire(body)


# --- identity -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_peer_id_matches_libp2p(seed: int) -> None:
    key = Ed25519PrivateKey.from_private_bytes(random.Random(seed).randbytes(32))
    libp2p_key = Libp2pPrivateKey.from_bytes(raw_private(key))
    expected = ID.from_pubkey(libp2p_key.get_public_key()).to_base58()
    assert peer_id_of(raw_public(key)) == expected


@pytest.mark.parametrize("size", [0, 31, 33])
def test_peer_id_refuses_wrong_key_length(size: int) -> None:
    with pytest.raises(ValueError):
        peer_id_of(b"\x01" * size)


# --- records ------------------------------------------------------------------------------

NOW = 1_700_000_000.0


class Keys:
    """An operator, a node and a stranger, each with an Ed25519 key."""

    def __init__(self) -> None:
        self.operator = Ed25519PrivateKey.generate()
        self.node = Ed25519PrivateKey.generate()
        self.other = Ed25519PrivateKey.generate()
        self.operator_public = raw_public(self.operator)
        self.peer = peer_id_of(raw_public(self.node))
        self.other_peer = peer_id_of(raw_public(self.other))

    def cert(
        self,
        peer: str | None = None,
        role: str = "node",
        issued_at: float = NOW - 60,
        expires_at: float = NOW + 3600,
        signer: Ed25519PrivateKey | None = None,
    ) -> bytes:
        certificate = Certificate(peer or self.peer, role, issued_at, expires_at)
        return issue_certificate(signer or self.operator, certificate)

    def record(self, **changes: Any) -> NodeRecord:
        record = NodeRecord(
            peer_id=self.peer,
            public_key=raw_public(self.node),
            role="node",
            version="0.1.0",
            addrs=["/ip4/127.0.0.1/tcp/4001"],
            hardware=Hardware("cpu", "test cpu", "RAM", 0, 0),
            models=[ModelInfo("echo", "text-generation", "float32", 2048, 4, "ready")],
            load=Load(inflight=1, queued=0, capacity=4, tokens_per_s=12.5, memory_free=0),
            seq=5,
            issued_at=NOW - 10,
            ttl=120.0,
        )
        return replace(record, **changes)


@pytest.fixture(scope="module")
def k() -> Keys:
    return Keys()


def test_signed_record_verifies_and_round_trips(k: Keys) -> None:
    record = k.record()
    blob = sign_record(k.node, record, k.cert())
    assert verify_record(blob, k.operator_public, NOW, key=node_key(k.peer)) == record
    assert verify_record(blob, k.operator_public, NOW) == record
    assert record_seq(blob) == 5


def test_certificate_verifies(k: Keys) -> None:
    cert = verify_certificate(k.cert(role="gateway"), k.operator_public, NOW)
    assert (cert.peer_id, cert.role) == (k.peer, "gateway")


def _tampered(blob: bytes) -> bytes:
    """The same envelope and signature around a record body with one value changed."""
    outer = unpack_map(blob)
    signed = unpack_map(outer["record"])
    body = unpack_map(signed["body"])
    body["seq"] += 1
    signed["body"] = pack(body)
    outer["record"] = pack(signed)
    return pack(outer)


@dataclass(frozen=True)
class Forgery:
    blob: bytes
    complaint: str  # what the error must say: rejected for the right reason
    now: float = NOW
    key: str | None = None


def _forgeries(k: Keys) -> dict[str, Forgery]:
    good = k.cert()
    record = k.record()
    return {
        "signed by another key": Forgery(sign_record(k.other, record, good), "bad signature"),
        "another key claiming the peer id": Forgery(
            sign_record(k.other, k.record(public_key=raw_public(k.other)), good),
            "does not match its peer id",
        ),
        "cert signed by a non-operator": Forgery(
            sign_record(k.node, record, k.cert(signer=k.other)), "bad signature"
        ),
        "cert for another peer": Forgery(
            sign_record(k.node, record, k.cert(peer=k.other_peer)), "does not admit"
        ),
        "cert role differs from record role": Forgery(
            sign_record(k.node, record, k.cert(role="gateway")), "does not admit"
        ),
        "record role differs from cert role": Forgery(
            sign_record(k.node, k.record(role="gateway"), good), "does not admit"
        ),
        "expired record": Forgery(
            sign_record(k.node, record, good), "record has expired", now=NOW + 111
        ),
        "expired certificate": Forgery(
            sign_record(k.node, record, k.cert(expires_at=NOW - 1)), "certificate is expired"
        ),
        "certificate not yet valid": Forgery(
            sign_record(k.node, record, k.cert(issued_at=NOW + 301)), "not yet valid"
        ),
        "stored under another peer's key": Forgery(
            sign_record(k.node, record, good), "another peer's key", key=node_key(k.other_peer)
        ),
        "tampered body": Forgery(_tampered(sign_record(k.node, record, good)), "bad signature"),
        "unknown model state": Forgery(
            sign_record(
                k.node,
                k.record(models=[ModelInfo("echo", "text-generation", "f32", 1, 1, "asleep")]),
                good,
            ),
            "unknown role, task or state",
        ),
        "certificate not bytes": Forgery(pack({"record": b"x", "cert": "text"}), "malformed"),
        "envelope without record": Forgery(pack({"cert": good}), "malformed"),
    }


@pytest.mark.parametrize("name", list(_forgeries(Keys())))
def test_forged_record_is_rejected(k: Keys, name: str) -> None:
    forgery = _forgeries(k)[name]
    with pytest.raises(RemoteProtocolError, match=forgery.complaint):
        verify_record(forgery.blob, k.operator_public, forgery.now, key=forgery.key)


def test_record_is_valid_until_it_expires(k: Keys) -> None:
    blob = sign_record(k.node, k.record(), k.cert())
    verify_record(blob, k.operator_public, NOW + 110)
    with pytest.raises(RemoteProtocolError, match="expired"):
        verify_record(blob, k.operator_public, NOW + 110.001)


def test_record_verified_against_another_operator_is_rejected(k: Keys) -> None:
    blob = sign_record(k.node, k.record(), k.cert())
    with pytest.raises(RemoteProtocolError):
        verify_record(blob, raw_public(k.other), NOW)


GARBAGE = [
    b"",
    b"garbage",
    b"\xc1\xc1",
    pack([1, 2, 3]),
    pack({"record": 1, "cert": b""}),
    pack({"record": b"\x01", "cert": b""}),
    pack({"record": pack({"body": "str", "sig": b""}), "cert": b""}),
    pack({"record": pack({"body": pack([1]), "sig": b""}), "cert": b""}),
    pack({"record": pack({"body": pack({"seq": "one"}), "sig": b""}), "cert": b""}),
    pack({"record": pack({"body": pack({"seq": None}), "sig": b""}), "cert": b""}),
    pack({"record": pack({"body": pack({"seq": math.nan}), "sig": b""}), "cert": b""}),
]


@pytest.mark.parametrize(
    "blob",
    [*GARBAGE, pack({"record": pack({"body": pack({"seq": 1}), "sig": b""}), "cert": b""})],
    ids=range(len(GARBAGE) + 1),
)
def test_garbage_blob_is_rejected(k: Keys, blob: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        verify_record(blob, k.operator_public, NOW)


@pytest.mark.parametrize("blob", GARBAGE, ids=range(len(GARBAGE)))
def test_record_seq_of_garbage_is_minus_one(blob: bytes) -> None:
    assert record_seq(blob) == -1


def _unsigned(**fields: Any) -> bytes:
    """A record envelope around arbitrary (unsigned) record fields."""
    return pack({"record": pack({"body": pack(fields), "sig": b"\x00" * 64}), "cert": b""})


def _record_fields(k: Keys, **changes: Any) -> dict[str, Any]:
    return k.record().to_dict() | changes


def test_record_seq_of_infinite_seq_is_minus_one(k: Keys) -> None:
    assert record_seq(_unsigned(**_record_fields(k, seq=math.inf))) == -1


@pytest.mark.parametrize(
    "change", [{"seq": math.inf}, {"public_key": 2**64 - 1}], ids=["seq-inf", "public-key-int"]
)
def test_unsigned_garbage_record_is_a_remote_protocol_error(
    k: Keys, change: dict[str, Any]
) -> None:
    with pytest.raises(RemoteProtocolError):
        verify_record(_unsigned(**_record_fields(k, **change)), k.operator_public, NOW)


def test_frames_up_to_four_mebibytes_pass_by_default() -> None:
    limit = 4 * 1024 * 1024
    assert FrameDecoder().feed(encode_frame(b"x" * limit)) == [b"x" * limit]
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(struct.pack(">I", limit + 1))
    with pytest.raises(LocalProtocolError):
        encode_frame(b"x" * (limit + 1))
    assert limit == DEFAULT_MAX_FRAME  # what the decoder and encoder above default to
