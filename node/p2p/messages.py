"""RPC messages over a byte stream: the one adapter both ends of a call use.

One locked write (frames from concurrent calls never interleave) and one decoder that
turns whatever a read brings into whole messages, as hypercorn's stream adapters do for
HTTP. Messages sent while a write is under way leave together in the next one: under load
one yamux frame, one Noise message and one system call carry many calls' frames. The read
loop itself stays with its owner: a client dispatches replies, a server starts calls.
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
        self._waiting: list[bytes] = []  # encoded, in the order sent, not yet written

    async def send(self, message: Message) -> None:
        """Write one message, with any others waiting; raises ``LocalProtocolError`` past the
        frame cap. Returns once it is written (trio's lock is fair: a later holder finds
        nothing of ours left)."""
        self._waiting.append(encode(message, self._max_frame))
        async with self._lock:
            if not self._waiting:
                return  # an earlier holder wrote ours with its own
            data = b"".join(self._waiting)
            self._waiting.clear()
            await self.stream.write(data)

    async def receive(self) -> list[Message] | None:
        """The messages the next read completes (maybe none yet); ``None`` once the peer
        has closed. Raises ``RemoteProtocolError`` on garbage, ``StreamBroken`` if reset."""
        data = await self.stream.read(READ_SIZE)
        if not data:
            return None
        return self._decoder.feed(data)

    async def close(self) -> None:
        await self.stream.close()
