"""The benchmark client: keep-alive HTTP/1.1 chat calls on asyncio streams, checked and timed.

A hand-written client, because the client must not be what is measured: it sends prepared
bytes and parses only the status line, the framing headers and the echoed text, so one core
of it outruns any server here. Three ways to drive a target:

* ``alternating``: one call at a time, rotating over several targets, so slow drifts of the
  machine hit every target alike;
* ``closed_loop``: C connections, each sending its next call when the last is answered;
  calls ending in a fixed window once all are going: throughput, and latency at C;
* ``open_loop``: calls sent at given times whatever the answers (Poisson arrivals);
  latency counts from the scheduled time, so a client falling behind is not hidden.

Core pinning: ``pin`` moves a process (every thread, and its children) onto given cores;
``split_cores`` picks the client's cores and leaves the rest to the servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Target:
    """An OpenAI-style endpoint: what is measured, and how to call it."""

    name: str
    url: str  # http://host:port
    headers: dict[str, str] = field(default_factory=dict)
    model: str = "echo"

    def request(self, prompt: str) -> bytes:
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}]})
        netloc = urlsplit(self.url).netloc
        head = ["POST /v1/chat/completions HTTP/1.1", f"host: {netloc}"]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        head += ["content-type: application/json", f"content-length: {len(body)}", "", ""]
        return "\r\n".join(head).encode() + body.encode()


class CallError(Exception):
    """A call that was not answered with the echoed text."""


class Connection:
    """One keep-alive connection; reopened when the server closes it."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def call(self, request: bytes) -> tuple[int, bytes]:
        """Send ``request``, read the answer: (status, body). A kept-alive connection that the
        server closed while it sat idle (its keep-alive timeout) is reopened and the call sent
        again, once, as HTTP clients do when no byte of an answer came back."""
        reused = self._writer is not None
        try:
            return await self._exchange(request)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
            return await self._exchange(request)

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._reader, self._writer
        assert reader is not None
        try:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, chunked, close = None, False, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value
                elif name == b"connection":
                    close = value == b"close"
            if chunked:
                body = await self._chunked(reader)
            elif length is not None:
                body = await reader.readexactly(length)
            else:
                body, close = await reader.read(), True
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status, body

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


def check(status: int, body: bytes, prompt: str) -> None:
    if status != 200:
        raise CallError(f"HTTP {status}: {body[:200]!r}")
    try:
        text = json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise CallError(f"not a chat completion: {body[:200]!r}") from exc
    if text != prompt:
        raise CallError(f"echoed {text!r}, sent {prompt!r}")


async def timed_call(connection: Connection, request: bytes, prompt: str) -> float:
    started = time.perf_counter()
    status, body = await connection.call(request)
    elapsed = time.perf_counter() - started
    check(status, body, prompt)
    return elapsed


@dataclass
class Run:
    """Latencies (seconds) of the calls answered, over ``seconds`` of wall time."""

    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0
    first_error: str = ""

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"


async def alternating(
    targets: Sequence[Target], prompt: str, calls: int, warmup: int
) -> dict[str, list[float]]:
    """``calls`` timed calls to each target, one at a time, the order rotating every round."""
    connections = [Connection(t.url) for t in targets]
    requests = [t.request(prompt) for t in targets]
    try:
        for connection, request in zip(connections, requests, strict=True):
            for _ in range(warmup):
                await timed_call(connection, request, prompt)
        samples: dict[str, list[float]] = {t.name: [] for t in targets}
        for i in range(calls):
            for k in range(len(targets)):
                j = (i + k) % len(targets)
                samples[targets[j].name].append(
                    await timed_call(connections[j], requests[j], prompt)
                )
        return samples
    finally:
        for connection in connections:
            connection.close()


async def closed_loop(
    target: Target, prompt: str, concurrency: int, seconds: float, warmup: float
) -> Run:
    """``concurrency`` connections calling back to back. The window opens once every
    connection has had its first answer and ``warmup`` seconds have passed (steady state:
    at high concurrency one round can take longer than the warm-up); then the calls that
    end within ``seconds`` are counted."""
    request = target.request(prompt)
    run = Run()
    loop = asyncio.get_running_loop()
    window: list[float] = []  # [opens, closes], once steady
    warm = asyncio.Event()
    started = 0
    stop = False

    def counted(now: float) -> bool:
        return bool(window) and window[0] <= now <= window[1]

    async def worker() -> None:
        nonlocal started
        connection = Connection(target.url)
        first = True
        try:
            while not stop:
                try:
                    latency = await timed_call(connection, request, prompt)
                except (CallError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    if counted(loop.time()):
                        run.failed(exc)
                    await asyncio.sleep(0.01)
                else:
                    if counted(loop.time()):
                        run.latencies.append(latency)
                if first:
                    first = False
                    started += 1
                    if started == concurrency:
                        warm.set()
        finally:
            connection.close()

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        await asyncio.sleep(warmup)
        await asyncio.wait_for(warm.wait(), timeout=120)
        window[:] = [loop.time(), loop.time() + seconds]
        await asyncio.sleep(seconds)
    finally:
        stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
    run.seconds = seconds
    return run


async def open_loop(target: Target, prompt: str, arrivals: Sequence[float]) -> Run:
    """A call at each of ``arrivals`` (seconds from now), whatever the answers so far."""
    request = target.request(prompt)
    idle = [Connection(target.url) for _ in range(16)]
    run = Run()
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2

    async def one(at: float) -> None:
        connection = idle.pop() if idle else Connection(target.url)
        try:
            status, body = await connection.call(request)
            check(status, body, prompt)
            run.latencies.append(loop.time() - (start + at))
        except (CallError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            run.failed(exc)
        idle.append(connection)

    tasks = []
    for at in arrivals:
        wait = start + at - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(at)))
    await asyncio.gather(*tasks)
    run.seconds = loop.time() - start
    for connection in idle:
        connection.close()
    return run


# --- cores ----------------------------------------------------------------------------------


def split_cores(client: int | None = None) -> tuple[set[int], set[int]]:
    """(client cores, server cores): the last quarter of the usable cores (at least one)
    for the client, the rest for the servers. One core: both share it."""
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        return set(usable), set(usable)
    count = client or max(1, len(usable) // 4)
    count = min(count, len(usable) - 1)
    return set(usable[-count:]), set(usable[:-count])


def _threads(pid: int) -> Iterator[int]:
    with contextlib.suppress(OSError):
        yield from (int(tid) for tid in os.listdir(f"/proc/{pid}/task"))


def pin(pid: int, cores: set[int], children: bool = True) -> None:
    """Move every thread of ``pid`` (and of its children) onto ``cores``; threads they start
    later inherit it."""
    import psutil  # type: ignore[import-untyped]

    pids = [pid]
    if children:
        with contextlib.suppress(psutil.Error):
            pids += [child.pid for child in psutil.Process(pid).children(recursive=True)]
    for each in pids:
        for tid in _threads(each):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cores)


@contextlib.contextmanager
def pinned_here(cores: set[int]) -> Iterator[None]:
    """This process (every thread, not its children) on ``cores`` for the block, then back."""
    before = os.sched_getaffinity(0)
    pin(os.getpid(), cores, children=False)
    try:
        yield
    finally:
        pin(os.getpid(), before, children=False)
