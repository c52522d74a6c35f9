"""Sans-IO wire protocols of BitingLip Swarm: framing, RPC frames, signed records.

Nothing here does I/O or imports trio, libp2p or torch: bytes in, values out.
"""

from protocols.audio import AudioChunk, Segment, SpeechParams, TranscribeParams, Transcript
from protocols.errors import (
    ErrorCode,
    FrameTooLarge,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from protocols.events import (
    GatewayEvent,
    RevokeEvent,
    UsageEvent,
    WatchUpdate,
    event_from_wire,
    event_to_wire,
)
from protocols.framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame
from protocols.generation import ChatMessage, GenerateParams, ImageParams
from protocols.identity import peer_id_of
from protocols.peers import PeerHardware, PeerLoad, PeerModel, PeerStatus, Summary
from protocols.records import (
    DHT_NAMESPACE,
    Certificate,
    Hardware,
    Load,
    ModelInfo,
    NodeRecord,
    issue_certificate,
    model_key,
    node_key,
    record_seq,
    sign_record,
    verify_certificate,
    verify_record,
)
from protocols.rpc import (
    RPC_PROTOCOL,
    Cancel,
    Chunk,
    End,
    Error,
    Hello,
    Message,
    MessageDecoder,
    Request,
    decode,
    encode,
)
from protocols.vision import VisionMessage, VisionParams

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DHT_NAMESPACE",
    "RPC_PROTOCOL",
    "AudioChunk",
    "Cancel",
    "Certificate",
    "ChatMessage",
    "Chunk",
    "End",
    "Error",
    "ErrorCode",
    "FrameDecoder",
    "FrameTooLarge",
    "GatewayEvent",
    "GenerateParams",
    "Hardware",
    "Hello",
    "ImageParams",
    "Load",
    "LocalProtocolError",
    "Message",
    "MessageDecoder",
    "ModelInfo",
    "NodeRecord",
    "PeerHardware",
    "PeerLoad",
    "PeerModel",
    "PeerStatus",
    "ProtocolError",
    "RemoteProtocolError",
    "Request",
    "RevokeEvent",
    "Segment",
    "SpeechParams",
    "Summary",
    "TranscribeParams",
    "Transcript",
    "UsageEvent",
    "VisionMessage",
    "VisionParams",
    "WatchUpdate",
    "decode",
    "encode",
    "encode_frame",
    "event_from_wire",
    "event_to_wire",
    "issue_certificate",
    "model_key",
    "node_key",
    "peer_id_of",
    "record_seq",
    "sign_record",
    "verify_certificate",
    "verify_record",
]
