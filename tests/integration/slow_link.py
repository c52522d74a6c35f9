"""A TCP relay that behaves like a long, lossy link: what ``tc netem`` would add, in user space.

    python -m tests.integration.slow_link LISTEN_HOST:PORT TARGET_HOST:PORT \
        --delay 0.05 --jitter 0.005 --loss 0.01

Every chunk read on one side is written to the other ``delay`` (± ``jitter``) seconds later,
so a relay both ways adds ``2 * delay`` to the round trip. TCP never loses data, so a lost
segment shows up as what TCP makes of it: the chunk, and everything after it (delivery
stays in order), arrives one retransmission timeout late (``RTO``: at least 200 ms, as
Linux's minimum). Prints ``ready`` once listening.
"""

from __future__ import annotations

import argparse
import random
import sys
from functools import partial

import trio

MIN_RTO = 0.2
CHUNK = 65536
# Chunks in flight on one direction; past it the reader waits, as a full window would.
IN_FLIGHT = 1024


class Link:
    def __init__(self, delay: float, jitter: float, loss: float) -> None:
        self.delay = delay
        self.jitter = jitter
        self.loss = loss
        self.rto = max(MIN_RTO, 4 * delay)

    async def carry(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        """Copy ``source`` to ``sink`` late, in order, until either side closes."""
        send, receive = trio.open_memory_channel[tuple[float, bytes]](IN_FLIGHT)

        async def deliver() -> None:
            async for due, data in receive:
                await trio.sleep_until(due)
                await sink.send_all(data)
            await sink.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(deliver)
            last = 0.0
            async with send:
                while data := await source.receive_some(CHUNK):
                    due = trio.current_time() + self.delay + random.uniform(-1, 1) * self.jitter
                    if random.random() < self.loss:
                        due += self.rto
                    last = max(last, due)  # a late chunk holds up the ones behind it
                    await send.send((last, data))

    async def serve(self, target: tuple[str, int], client: trio.SocketStream) -> None:
        try:
            server = await trio.open_tcp_stream(*target)
            async with client, server, trio.open_nursery() as nursery:
                nursery.start_soon(self.carry, client, server)
                nursery.start_soon(self.carry, server, client)
        except* (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # one side went away (both directions may say so at once): so does the other


def _address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


async def run(listen: tuple[str, int], target: tuple[str, int], link: Link) -> None:
    listeners = await trio.open_tcp_listeners(listen[1], host=listen[0])
    print("ready", flush=True)
    await trio.serve_listeners(partial(link.serve, target), listeners)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("listen", type=_address)
    parser.add_argument("target", type=_address)
    parser.add_argument("--delay", type=float, default=0.05, help="one way, seconds")
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--loss", type=float, default=0.0, help="fraction of chunks lost")
    args = parser.parse_args(argv)
    trio.run(run, args.listen, args.target, Link(args.delay, args.jitter, args.loss))
    return 0


if __name__ == "__main__":
    sys.exit(main())
