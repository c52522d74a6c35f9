"""The bare echo: an OpenAI-style chat endpoint with nothing behind it, the baseline that the
swarm and LiteLLM are measured against and the backend LiteLLM routes to.

    python -m scripts.benchsuite.echo_server [--delay SECONDS] [--slots N]

A plain ASGI callable on hypercorn's trio worker, as the gateway runs: it parses the chat
body and answers a chat.completion echoing the last message, serialized as FastAPI's
``JSONResponse`` does. ``--delay`` sleeps that long per word of the answer, like the echo
node's ``--echo-delay``; ``--slots`` answers that many calls at once and queues the rest
first come first served, like a node's slots. It prints its URL once bound (127.0.0.1,
port 0) and stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any

import trio

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def completion(body: dict[str, Any]) -> tuple[str, bytes]:
    """The echoed text and the chat.completion answering ``body``."""
    text = str(body["messages"][-1]["content"])
    prompt_tokens = sum(len(str(m["content"]).split()) + 1 for m in body["messages"])
    completion_tokens = len(text.split())
    reply = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return text, json.dumps(reply, ensure_ascii=False, separators=(",", ":")).encode()


def echo_app(delay: float = 0.0, slots: int = 0) -> App:
    """The ASGI app; ``slots`` 0 answers every call at once."""
    gate = trio.Semaphore(slots) if slots else None

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        raw = b""
        more = True
        while more:
            message = await receive()
            raw += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["path"].endswith("/models"):  # what an OpenAI client may ask first
            data = b'{"object":"list","data":[{"id":"echo","object":"model"}]}'
        else:
            text, data = completion(json.loads(raw))
            async with gate if gate is not None else contextlib.nullcontext():
                for _ in text.split() if delay else []:
                    await trio.sleep(delay)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    return app


def serve(delay: float, slots: int) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 1
    config.backlog = 1024

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                app = echo_app(delay, slots)
                binds = await nursery.start(
                    partial(hypercorn_serve, app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
                )
                print(binds[0], flush=True)
                async for _ in signals:
                    break
                stop.set()

    trio.run(main)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per answered word")
    parser.add_argument("--slots", type=int, default=0, help="calls answered at once (0: all)")
    args = parser.parse_args(argv)
    if args.delay < 0 or args.slots < 0 or not math.isfinite(args.delay):
        parser.error("--delay and --slots must not be negative")
    serve(args.delay, args.slots)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
