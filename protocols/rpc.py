"""RPC frames exchanged on ``/bitinglip/rpc/1.0.0`` streams.

A caller opens a stream, sends ``Hello`` with its membership certificate, then any
number of ``Request`` frames, each with a caller-chosen id, so calls are multiplexed on
one long-lived stream. The server answers each id with zero or more ``Chunk`` frames
followed by exactly one ``End`` or ``Error``. ``Cancel`` stops a call in flight.

Each frame is a msgpack map ``{"t": <type>, ...}`` inside a length-prefixed frame.

A ``Request`` may carry the request id of the HTTP call it serves (``"rid"``), so the
caller's and the server's log lines for one call share it. Peers that predate it send
none, and ignore it when they receive it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from protocols.codec import pack, unpack_map
from protocols.errors import ErrorCode, RemoteProtocolError
from protocols.framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame

RPC_PROTOCOL = "/bitinglip/rpc/1.0.0"
# A Hello holds one certificate (~200 bytes): the first frame on a stream is capped at this.
HELLO_MAX_FRAME = 8 * 1024
# A request id is a short token safe in a log line and a header: no spaces, no quotes.
MAX_REQUEST_ID = 64
_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID}}}")


def is_request_id(value: object) -> bool:
    """Whether ``value`` is a usable request id: 1 to ``MAX_REQUEST_ID`` characters of
    letters, digits and ``. _ : -``."""
    return isinstance(value, str) and _REQUEST_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class Hello:
    certificate: bytes


@dataclass(frozen=True)
class Request:
    id: int
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    timeout_ms: int | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Chunk:
    id: int
    data: dict[str, Any]


@dataclass(frozen=True)
class End:
    id: int
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Error:
    id: int
    code: ErrorCode
    message: str


@dataclass(frozen=True)
class Cancel:
    id: int


Message = Hello | Request | Chunk | End | Error | Cancel


def encode(message: Message, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Serialize a message into one frame."""
    body: dict[str, Any]
    match message:
        case Hello(certificate):
            body = {"t": "hello", "cert": certificate}
        case Request(id_, method, params, timeout_ms, request_id):
            body = {"t": "req", "id": id_, "m": method, "p": params, "to": timeout_ms}
            if request_id is not None:
                body["rid"] = request_id
        case Chunk(id_, data):
            body = {"t": "chunk", "id": id_, "d": data}
        case End(id_, data):
            body = {"t": "end", "id": id_, "d": data}
        case Error(id_, code, text):
            body = {"t": "err", "id": id_, "code": code.value, "msg": text}
        case Cancel(id_):
            body = {"t": "cancel", "id": id_}
    return encode_frame(pack(body), max_frame)


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(name)
    # bool is an int subclass: never accept it where a number is meant.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise RemoteProtocolError(f"field {name!r} is missing or has the wrong type")
    return value


def _id(body: dict[str, Any]) -> int:
    value: int = _field(body, "id", int)
    if not 0 <= value < 2**63:
        raise RemoteProtocolError("field 'id' is out of range")
    return value


def decode(payload: bytes) -> Message:
    """Parse one frame's payload; any deviation raises ``RemoteProtocolError``."""
    body = unpack_map(payload)
    kind = body.get("t")
    if kind == "hello":
        return Hello(_field(body, "cert", bytes))
    if kind == "req":
        timeout = body.get("to")
        if timeout is not None and (
            not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0
        ):
            raise RemoteProtocolError("field 'to' must be a positive integer")
        request_id = body.get("rid")
        if request_id is not None and not is_request_id(request_id):
            raise RemoteProtocolError("field 'rid' is not a request id")
        return Request(
            _id(body), _field(body, "m", str), _field(body, "p", dict), timeout, request_id
        )
    if kind == "chunk":
        return Chunk(_id(body), _field(body, "d", dict))
    if kind == "end":
        return End(_id(body), _field(body, "d", dict))
    if kind == "err":
        try:
            code = ErrorCode(_field(body, "code", str))
        except ValueError:
            code = ErrorCode.INTERNAL
        return Error(_id(body), code, _field(body, "msg", str))
    if kind == "cancel":
        return Cancel(_id(body))
    raise RemoteProtocolError(f"unknown frame type {kind!r}")


class MessageDecoder:
    """Bytes in, messages out: framing plus decoding. ``first_max_frame`` caps the first
    frame (a server's decoder caps it at ``HELLO_MAX_FRAME``)."""

    def __init__(
        self, max_frame: int = DEFAULT_MAX_FRAME, first_max_frame: int | None = None
    ) -> None:
        self._frames = FrameDecoder(max_frame, first_max_frame)

    def feed(self, data: bytes) -> list[Message]:
        return [decode(frame) for frame in self._frames.feed(data)]
