"""Length-prefixed framing: a 4-byte big-endian length, then that many bytes.

Sans-IO: ``encode_frame`` turns a payload into bytes, ``FrameDecoder`` turns bytes
received in any chunking back into payloads. Both enforce a hard maximum frame size,
so a peer can never make us buffer more than one frame's worth.
"""

from __future__ import annotations

import struct

from protocols.errors import FrameTooLarge, LocalProtocolError

DEFAULT_MAX_FRAME = 4 * 1024 * 1024
_HEADER = struct.Struct(">I")


def encode_frame(payload: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Prefix ``payload`` with its length."""
    if len(payload) > max_frame:
        raise LocalProtocolError(f"frame of {len(payload)} bytes exceeds {max_frame}")
    return _HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Reassembles frames from a byte stream.

    ``first_max_frame`` caps the first frame alone: a handshake frame is small, and a peer
    that has not introduced itself yet must not make us buffer or decode megabytes.
    """

    def __init__(
        self, max_frame: int = DEFAULT_MAX_FRAME, first_max_frame: int | None = None
    ) -> None:
        self._max_frame = max_frame
        self._next_max = max_frame if first_max_frame is None else first_max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every frame they complete, in order.

        Raises ``FrameTooLarge`` as soon as a header announces an oversized frame,
        before its body arrives.
        """
        self._buffer += data
        frames: list[bytes] = []
        while len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            if length > self._next_max:
                raise FrameTooLarge(f"frame of {length} bytes exceeds {self._next_max}")
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            frames.append(bytes(self._buffer[_HEADER.size : end]))
            del self._buffer[:end]
            self._next_max = self._max_frame
        return frames

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a whole frame."""
        return len(self._buffer)
