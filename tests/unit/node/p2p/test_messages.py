"""The message stream: concurrent sends share writes and keep their order."""

from __future__ import annotations

import trio
import trio.lowlevel

from node.p2p.messages import MessageStream
from protocols import Chunk, Message, MessageDecoder


class SlowStream:
    """Records each write; each takes a moment, as a socket under load does."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def read(self, max_bytes: int) -> bytes:
        return b""

    async def write(self, data: bytes) -> None:
        await trio.sleep(0.01)
        self.writes.append(data)

    async def close(self) -> None:
        return


async def test_messages_sent_during_a_write_leave_together_in_order() -> None:
    stream = SlowStream()
    messages = MessageStream(stream)
    returned: list[int] = []

    async def send(i: int) -> None:
        await messages.send(Chunk(i, {"text": str(i)}))
        returned.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(send, i)
            await trio.lowlevel.checkpoint()  # each in turn: 0 writes, 1..9 queue behind it

    assert len(stream.writes) == 2
    decoded: list[Message] = MessageDecoder().feed(b"".join(stream.writes))
    assert [m.id for m in decoded if isinstance(m, Chunk)] == list(range(10))
    assert sorted(returned) == list(range(10))  # every sender returned once written


async def test_a_lone_send_is_written_at_once() -> None:
    stream = SlowStream()
    messages = MessageStream(stream)
    await messages.send(Chunk(1, {}))
    await messages.send(Chunk(2, {}))
    assert len(stream.writes) == 2
