"""One byte-stream interface over libp2p streams and trio streams.

The RPC adapter speaks to ``ByteStream`` only, so tests drive it over
``trio.testing.memory_stream_pair()`` and the swarm drives it over libp2p.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any, Protocol

import trio


class StreamBroken(Exception):
    """The stream was reset or failed under us."""


class ByteStream(Protocol):
    async def read(self, max_bytes: int) -> bytes:
        """Return up to ``max_bytes``; ``b""`` at end of stream."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class TrioByteStream:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int) -> bytes:
        try:
            return bytes(await self._stream.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise StreamBroken(str(exc)) from exc

    async def write(self, data: bytes) -> None:
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise StreamBroken(str(exc)) from exc

    async def close(self) -> None:
        await self._stream.aclose()


class Libp2pByteStream:
    """Adapts a libp2p ``INetStream``: EOF becomes ``b""``, every failure ``StreamBroken``."""

    def __init__(self, stream: Any) -> None:
        from libp2p.network.stream.exceptions import StreamEOF

        self._stream = stream
        self._eof = StreamEOF

    @property
    def remote_peer(self) -> str:
        return str(self._stream.muxed_conn.peer_id)

    # ``trio.Cancelled`` is a BaseException, so the ``except Exception`` clauses below
    # never swallow a cancellation.
    async def read(self, max_bytes: int) -> bytes:
        try:
            return bytes(await self._stream.read(max_bytes))
        except self._eof:
            return b""
        except Exception as exc:  # libp2p raises several unrelated types on failure
            raise StreamBroken(repr(exc)) from exc

    async def write(self, data: bytes) -> None:
        try:
            await self._stream.write(data)
        except Exception as exc:
            raise StreamBroken(repr(exc)) from exc

    async def close(self) -> None:
        try:
            await self._stream.close()
        except Exception:
            await self.reset()

    async def reset(self) -> None:
        with suppress(Exception):  # already gone
            await self._stream.reset()
