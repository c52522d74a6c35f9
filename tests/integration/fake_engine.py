"""A stand-in for vLLM or llama-server: an OpenAI-compatible server in one small process.

It answers with the words of the prompt (or of the last chat message), one token per
word, ``--delay`` seconds apart, at most ``--slots`` generations at once (the rest wait).
It serves ``/health`` (503 for ``--ready-after`` seconds), ``/v1/models``, both
completions endpoints (streamed, with a usage event unless ``--no-usage``), ``/metrics``
in both engines' Prometheus names, and ``/stats``: the request bodies it received and
how many streams the client closed before their end. ``POST /sick`` makes ``/health``
fail from then on. A prompt word ``CRASH`` makes the
process exit with code 3 when the answer reaches it. ``--worker`` starts a child process
that outlives this one unless its whole process group is stopped.

Only the standard library, so it starts in a blink.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class State:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.slots = threading.Semaphore(args.slots)
        self.running = 0
        self.waiting = 0
        self.disconnects = 0
        self.sick = False
        self.requests: list[dict[str, Any]] = []
        self.worker: subprocess.Popen[bytes] | None = None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        state = self.state
        if self.path == "/health":
            ready = time.monotonic() - state.started >= state.args.ready_after and not state.sick
            self._send(200 if ready else 503, {} if ready else {"error": "loading"})
        elif self.path == "/v1/models":
            model = {"id": state.args.model, "object": "model", "max_model_len": 4096}
            self._send(200, {"object": "list", "data": [model]})
        elif self.path == "/metrics":
            with state.lock:
                running, waiting, gone = state.running, state.waiting, state.disconnects
            text = (
                "# TYPE vllm:num_requests_running gauge\n"
                f'vllm:num_requests_running{{model_name="{state.args.model}"}} {running}.0\n'
                f'vllm:num_requests_waiting{{model_name="{state.args.model}"}} {waiting}.0\n'
                f"llamacpp:requests_processing {running}\n"
                f"llamacpp:requests_deferred {waiting}\n"
                f"fake_disconnects_total {gone}\n"
            )
            self._send_bytes(200, text.encode(), "text/plain; version=0.0.4")
        elif self.path == "/stats":
            with state.lock:
                stats = {
                    "requests": state.requests,
                    "disconnects": state.disconnects,
                    "worker": state.worker.pid if state.worker else None,
                }
            self._send(200, stats)
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path == "/sick":  # from now on /health fails, as a hung engine's would
            self.state.sick = True
            self._send(200, {})
            return
        with self.state.lock:
            self.state.requests.append(body)
        chat = self.path == "/v1/chat/completions"
        if not chat and self.path != "/v1/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        if body.get("model") != self.state.args.model:
            self._send(404, {"error": {"message": f"model {body.get('model')!r} not found"}})
            return
        if chat:
            source = body["messages"][-1]["content"]
            prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
        else:
            source = body["prompt"]
            prompt_tokens = len(source.split())
        # Headers at once, as vLLM sends them; the request then waits for a slot, and
        # gives up its place in line when the client goes away.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        with self.state.lock:
            self.state.waiting += 1
        while not self.state.slots.acquire(timeout=0.02):
            if self._client_gone():
                with self.state.lock:
                    self.state.waiting -= 1
                    self.state.disconnects += 1
                return
        with self.state.lock:
            self.state.waiting -= 1
            self.state.running += 1
        try:
            if chat and body.get("tools"):
                self._call(body, source, prompt_tokens)
                return
            if chat and body.get("response_format"):  # the words as a JSON answer
                source = json.dumps({"echo": source}, separators=(",", ":"))
            self._stream(body, chat, source.split() or ["(empty)"], prompt_tokens)
        finally:
            with self.state.lock:
                self.state.running -= 1
            self.state.slots.release()

    def _client_gone(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""

    def _stream(self, body: dict[str, Any], chat: bool, words: list[str], prompt: int) -> None:
        stop: list[str] = body.get("stop") or []
        produced, count, reason = "", 0, "stop"
        try:
            if chat:
                self._event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
            for word in words:
                if word == "CRASH":
                    os._exit(3)
                if count >= body["max_tokens"]:
                    reason = "length"
                    break
                time.sleep(self.state.args.delay)
                piece = word if count == 0 else " " + word
                count += 1
                hit = next((s for s in stop if s in produced + piece), None)
                if hit is not None:
                    piece = (produced + piece)[: (produced + piece).index(hit)][len(produced) :]
                    if piece:
                        self._event(_choice(chat, piece, None))
                    break
                produced += piece
                event = _choice(chat, piece, None)
                if chat and body.get("logprobs"):
                    top = [{"token": piece, "logprob": -0.5}, {"token": "x", "logprob": -2.0}]
                    lp = [
                        {
                            "token": piece,
                            "logprob": -0.5,
                            "top_logprobs": top[: body["top_logprobs"]],
                        }
                    ]
                    event["choices"][0]["logprobs"] = {"content": lp}
                self._event(event)
            self._event(_choice(chat, "", reason))
            if body.get("stream_options", {}).get("include_usage") and not self.state.args.no_usage:
                usage = {"prompt_tokens": prompt, "completion_tokens": count}
                self._event({"choices": [], "usage": usage | {"total_tokens": prompt + count}})
            self._write(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            with self.state.lock:
                self.state.disconnects += 1

    def _call(self, body: dict[str, Any], source: str, prompt: int) -> None:
        """A call to the named tool (else the first) with the prompt's words as arguments,
        streamed as vLLM streams one: id and name, then the arguments in three pieces."""
        choice = body.get("tool_choice")
        name = choice["function"]["name"] if isinstance(choice, dict) else None
        name = name or body["tools"][0]["function"]["name"]
        arguments = json.dumps({"words": source.split()})
        third = len(arguments) // 3 + 1
        head = {"index": 0, "id": "chatcmpl-tool-1", "type": "function"}
        deltas = [head | {"function": {"name": name, "arguments": ""}}] + [
            {"index": 0, "function": {"arguments": arguments[i : i + third]}}
            for i in range(0, len(arguments), third)
        ]
        for delta in deltas:
            self._event({"choices": [{"index": 0, "delta": {"tool_calls": [delta]}}]})
        self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        usage = {"prompt_tokens": prompt, "completion_tokens": 3}
        self._event({"choices": [], "usage": usage})
        self._write(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _event(self, data: dict[str, Any]) -> None:
        self._write(b"data: " + json.dumps(data).encode() + b"\n\n")

    def _write(self, data: bytes) -> None:
        """One chunk of a chunked body, as the engines' HTTP servers send a stream."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _send(self, status: int, body: dict[str, Any]) -> None:
        self._send_bytes(status, json.dumps(body).encode(), "application/json")

    def _send_bytes(self, status: int, data: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _choice(chat: bool, text: str, reason: str | None) -> dict[str, Any]:
    if chat:
        choice: dict[str, Any] = {"index": 0, "delta": {"content": text} if text else {}}
    else:
        choice = {"index": 0, "text": text}
    return {"choices": [choice | {"finish_reason": reason}]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--ready-after", type=float, default=0.0)
    parser.add_argument("--no-usage", action="store_true")
    parser.add_argument("--worker", action="store_true", help="start a child, as vLLM does")
    args = parser.parse_args(argv)
    Handler.state = State(args)
    if args.worker:
        sleep = [sys.executable, "-c", "import time; time.sleep(600)"]
        Handler.state.worker = subprocess.Popen(sleep)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"fake engine serving {args.model} on port {args.port}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
