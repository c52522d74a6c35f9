"""Dial-back over a stream (``protocols.reachability``): the relay's answer and the asking.

A relay answers on ``DIALBACK_PROTOCOL`` behind the admission gate, so only members ask; a
question that arrives through another relay is answered with nothing (its IP is the
relay's). ``tcp_probe`` is how the relay tries an address: a plain TCP connection, closed
at once, within ``PROBE_TIMEOUT``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from node.p2p.streams import ByteStream
from protocols import RemoteProtocolError
from protocols.framing import FrameDecoder
from protocols.reachability import DIALBACK_MAX_FRAME, decode_addrs, dialable, encode_addrs

PROBE_TIMEOUT = 3.0
ASK_TIMEOUT = 2 * PROBE_TIMEOUT + 5.0

Probe = Callable[[str, int], Awaitable[bool]]


async def tcp_probe(ip: str, port: int) -> bool:
    """Whether a TCP connection to ``ip:port`` opens within ``PROBE_TIMEOUT``."""
    with trio.move_on_after(PROBE_TIMEOUT):
        try:
            stream = await trio.open_tcp_stream(ip, port)
        except OSError:
            return False
        await stream.aclose()
        return True
    return False


async def read_addrs(stream: ByteStream) -> list[str]:
    """The one frame of addresses the other side sends; ``RemoteProtocolError`` if it is
    malformed, too large, or the stream ends first."""
    decoder = FrameDecoder(DIALBACK_MAX_FRAME)
    while True:
        data = await stream.read(DIALBACK_MAX_FRAME)
        if not data:
            raise RemoteProtocolError("the stream ended before the dial-back frame")
        frames = decoder.feed(data)
        if frames:
            return decode_addrs(frames[0])


class Answers:
    """A relay's side: one dial-back at a time per asker, so no member can make the relay
    open connections faster than one question's probes take; a second question while the
    first is being answered is answered with nothing tried."""

    def __init__(self, probe: Probe = tcp_probe) -> None:
        self._probe = probe
        self._asking: set[str] = set()

    async def answer(self, stream: ByteStream, peer: str, observed_ip: str | None) -> None:
        """Read ``peer``'s addresses, try those at ``observed_ip`` (all at once), and
        answer with the ones that took a connection. ``observed_ip`` is ``None`` where the
        question came through a relay: nothing is tried."""
        addrs = await read_addrs(stream)
        reached: list[str] = []

        async def attempt(addr: str, ip: str, port: int) -> None:
            if await self._probe(ip, port):
                reached.append(addr)

        if observed_ip is not None and peer not in self._asking:
            self._asking.add(peer)
            try:
                async with trio.open_nursery() as nursery:
                    for addr, ip, port in dialable(addrs, observed_ip):
                        nursery.start_soon(attempt, addr, ip, port)
            finally:
                self._asking.discard(peer)
        await stream.write(encode_addrs(sorted(reached)))


async def ask(stream: ByteStream, addrs: list[str]) -> list[str]:
    """Send our ``addrs``; return those the relay could open a connection to."""
    await stream.write(encode_addrs(addrs))
    return await read_addrs(stream)
