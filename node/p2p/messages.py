"""RPC messages over a byte stream: the one adapter both ends of a call use.

One locked write (frames from concurrent calls never interleave) and one decoder that
turns whatever a read brings into whole messages, as hypercorn's stream adapters do for
HTTP. The read loop itself stays with its owner: a client dispatches replies, a server
starts calls.
"""

from __future__ import annotations

import trio

from node.p2p.streams import ByteStream
from protocols import DEFAULT_MAX_FRAME, Message, MessageDecoder, encode

READ_SIZE = 64 * 1024


class MessageStream:
    def __init__(
        self,
        stream: ByteStream,
        max_frame: int = DEFAULT_MAX_FRAME,
        first_max_frame: int | None = None,
    ) -> None:
        self.stream = stream
        self._max_frame = max_frame
        self._decoder = MessageDecoder(max_frame, first_max_frame)
        self._lock = trio.Lock()

    async def send(self, message: Message) -> None:
        """Write one message; raises ``LocalProtocolError`` past the frame cap."""
        async with self._lock:
            await self.stream.write(encode(message, self._max_frame))

    async def receive(self) -> list[Message] | None:
        """The messages the next read completes (maybe none yet); ``None`` once the peer
        has closed. Raises ``RemoteProtocolError`` on garbage, ``StreamBroken`` if reset."""
        data = await self.stream.read(READ_SIZE)
        if not data:
            return None
        return self._decoder.feed(data)

    async def close(self) -> None:
        await self.stream.close()
