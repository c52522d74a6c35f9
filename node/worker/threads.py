"""Between a runner's worker thread and the node's trio loop.

A runner is synchronous and runs in a thread: ``in_thread`` waits for one result, ``pump``
relays what a generator yields as it comes. Either way a caller that goes away sets the
runner's cancel flag, which the runner checks between its steps.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any, TypeVar

import trio

from node.p2p.rpc_server import RpcError
from node.worker.runners.engine_wire import EngineUnavailable
from protocols import ErrorCode

T = TypeVar("T")


async def in_thread(work: Callable[[threading.Event], T]) -> T:
    """Run ``work(cancelled)`` in a worker thread and return what it returns.

    If this task is cancelled, ``cancelled`` is set and the task still waits for ``work``
    to return: the scheduler slot is freed only once the model has really stopped.
    """
    cancelled = threading.Event()
    results: list[T] = []
    failures: list[Exception] = []

    def run() -> None:
        try:
            results.append(work(cancelled))
        except Exception as exc:  # raised below: inside the nursery it would be grouped
            failures.append(exc)

    async def flag_when_cancelled() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flag_when_cancelled)
        await trio.to_thread.run_sync(run)
        nursery.cancel_scope.cancel()
    if failures:
        raise failures[0]
    return results[0]


async def pump(
    items: Iterator[T],
    send: trio.MemorySendChannel[T | Exception],
    cancelled: threading.Event,
    last: Callable[[T], bool],
) -> None:
    """Run a runner's generator in one worker thread for the whole call (not a thread
    hop per item), handing each item to trio as it comes, until ``last`` says it was."""
    token = trio.lowlevel.current_trio_token()

    def forward(item: T | Exception) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            send.send_nowait(item)

    def soon(callback: Callable[..., None], *args: Any) -> None:
        # Queued on the loop without waiting for it (FIFO, so deltas keep their order);
        # an abandoned thread may outlive the loop itself.
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(callback, *args)

    def pump() -> None:
        try:
            for item in items:
                soon(forward, item)
                if last(item) or cancelled.is_set():
                    break
        except ValueError as exc:  # the runner refused the request (e.g. too long)
            soon(forward, RpcError(ErrorCode.BAD_REQUEST, str(exc)))
        except EngineUnavailable as exc:  # restarting: the gateway can try another node
            soon(forward, RpcError(ErrorCode.UNAVAILABLE, str(exc)))
        except Exception as exc:
            soon(forward, exc)
        finally:
            if isinstance(items, Generator):
                # Its own cleanup (a lock, a batch slot) runs now, not when it is collected.
                with contextlib.suppress(Exception):
                    items.close()
            soon(send.close)

    # Abandoned on cancel: the runner sees ``cancelled`` and stops at its next item.
    await trio.to_thread.run_sync(pump, abandon_on_cancel=True)


def drain(receive: trio.MemoryReceiveChannel[T]) -> list[T]:
    """Whatever ``receive`` holds now, without waiting."""
    items: list[T] = []
    while True:
        try:
            items.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return items
