"""A runner that serves a model through an inference engine in a child process.

vLLM, llama.cpp's ``llama-server`` and SGLang each serve a model over the OpenAI HTTP
API. ``EngineRunner`` starts one such server from a command line, waits until it
answers ``/health``, streams every generation through ``/v1/chat/completions`` or
``/v1/completions``, reads the engine's own queue from its Prometheus metrics, and
starts it again when it dies. A call that goes away closes its HTTP stream: that is
how these engines learn to stop working on a request.

Its errors are drawn in ``node.runners.engine_wire``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import httpx

from node.worker.runners.base import Delta, refuse_extras
from node.worker.runners.engine_process import EngineProcess, describe_exit, free_port
from node.worker.runners.engine_wire import (
    EngineError,
    EngineRejected,
    EngineStartError,
    EngineUnavailable,
    SseDecoder,
    error_message,
    parse_metrics,
    read_chunk,
    request_body,
)
from protocols import GenerateParams, ModelInfo

logger = logging.getLogger(__name__)

# Each engine's Prometheus names for requests running and waiting in its own queue.
ENGINE_METRICS: dict[str, tuple[str, str]] = {
    "vllm": ("vllm:num_requests_running", "vllm:num_requests_waiting"),
    "llama-server": ("llamacpp:requests_processing", "llamacpp:requests_deferred"),
    "sglang": ("sglang:num_running_reqs", "sglang:num_queue_reqs"),
}
# Used when the engine does not say how long a context it serves.
_FALLBACK_CONTEXT = 2048
# Restart backoff doubles up to this; an engine that ran this long starts from the bottom.
MAX_BACKOFF = 60.0
_STABLE_AFTER = 60.0
# How often calls waiting on a silent engine are checked for cancellation.
_CANCEL_POLL = 0.05
_ONE_USE = {"Connection": "close"}


@dataclass(frozen=True)
class EngineSpec:
    """How to run one model under an engine: one ``[[node.engines]]`` table of a node's
    config (docs/engines.md).

    ``{host}`` and ``{port}`` in ``command`` are filled in (port 0: a free one, picked again
    at each restart). ``engine`` (``vllm``, ``llama-server``, ``sglang``, or ``openai`` for
    any other server) says which metrics give its load. ``env`` is added to the node's
    environment. ``served_model`` is the name the engine knows the model by (default: the
    first one it lists); ``context_length`` 0 takes the engine's word for it. Every
    ``poll_interval`` the engine's health and metrics are read; one that runs but has not
    answered ``/health`` for ``unhealthy_timeout`` is stopped and started again, like one
    that exits (after ``restart_backoff``, doubling).
    """

    id: str
    command: tuple[str, ...]
    engine: str = "openai"
    port: int = 0
    host: str = "127.0.0.1"
    slots: int = 1
    ready_timeout: float = 600.0
    env: Mapping[str, str] = field(default_factory=dict)
    served_model: str | None = None
    context_length: int = 0
    restart_backoff: float = 1.0
    poll_interval: float = 0.5
    unhealthy_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not self.command:
            raise ValueError(f"engine {self.id!r}: the command is empty")
        if self.engine != "openai" and self.engine not in ENGINE_METRICS:
            known = ", ".join(["openai", *ENGINE_METRICS])
            raise ValueError(f"engine {self.id!r}: unknown engine {self.engine!r} ({known})")
        if self.slots < 1:
            raise ValueError(f"engine {self.id!r}: needs at least one slot")

    @classmethod
    def from_config(cls, table: Mapping[str, Any]) -> EngineSpec:
        """A spec from a TOML table; ``ValueError`` naming what is wrong."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"unknown engine settings: {', '.join(unknown)}")
        model, command = table.get("id"), table.get("command")
        if not isinstance(model, str) or not model:
            raise ValueError("an engine needs an id: the model id the swarm will see")
        if isinstance(command, str):
            command = shlex.split(command)
        if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
            raise ValueError(f"engine {model!r}: command must be a list of strings")
        values = dict(table) | {"command": tuple(command)}
        for f in fields(cls):
            value = values.get(f.name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if f.type == "int" and f.name in values and not (number and isinstance(value, int)):
                raise ValueError(f"engine {model!r}: {f.name} must be a whole number")
            if f.type == "float" and f.name in values and not number:
                raise ValueError(f"engine {model!r}: {f.name} must be a number")
        env = values.get("env", {})
        if not isinstance(env, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise ValueError(f"engine {model!r}: env must map names to strings")
        return cls(**values)


@dataclass(frozen=True)
class EngineLoad:
    """Requests the engine reports running and waiting in its own queue."""

    running: int
    waiting: int


class EngineRunner:
    """One model served by an OpenAI-compatible engine in a supervised child process.

    Use ``start``; it returns once the engine is ready. A background thread restarts the
    engine whenever it exits (with backoff) and reads its metrics while it runs.
    """

    def __init__(self, spec: EngineSpec) -> None:
        """Prepare to run ``spec``; nothing starts until ``start`` launches it."""
        self.spec = spec
        self._model_id = spec.id
        self._template = list(spec.command)
        self._host = spec.host
        self._fixed_port = spec.port if spec.port > 0 else None
        self._metrics = ENGINE_METRICS.get(spec.engine)
        self._slots = spec.slots
        self._ready_timeout = spec.ready_timeout
        self._env = spec.env
        self._served = spec.served_model
        self._context = spec.context_length
        self._restart_backoff = spec.restart_backoff
        self._poll_interval = spec.poll_interval
        self._unhealthy_timeout = spec.unhealthy_timeout
        self._client = httpx.Client(
            # Never through a proxy from the environment: the engine is on this host.
            trust_env=False,
            timeout=httpx.Timeout(300.0, connect=5.0),
            limits=httpx.Limits(max_connections=None),
        )
        self._command: list[str] = []
        self._url = ""
        self._choose_port()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._process: EngineProcess | None = None
        self._ready = False
        self._down_reason = "it is starting"
        self._load: EngineLoad | None = None
        self._restarts = 0
        self._supervisor: threading.Thread | None = None
        # Streams whose connection the cancel watcher shuts once their caller goes away.
        self._watched: dict[int, tuple[threading.Event, socket.socket]] = {}

    @classmethod
    def start(cls, spec: EngineSpec) -> EngineRunner:
        """Run ``spec.command`` and return once the engine answers; supervise it from then
        on (see ``EngineSpec`` for what each setting does).

        Raises ``EngineStartError`` naming the exit code and the last lines of output
        when the engine exits first, or when it is not ready within ``ready_timeout``.
        """
        runner = cls(spec)
        try:
            runner._launch_and_wait()
        except BaseException:
            runner.close()
            raise
        runner._supervisor = threading.Thread(
            target=runner._supervise, name=f"engine {spec.id}", daemon=True
        )
        runner._supervisor.start()
        threading.Thread(
            target=runner._watch_cancels, name=f"engine {spec.id} cancels", daemon=True
        ).start()
        return runner

    @property
    def info(self) -> ModelInfo:
        state = "ready" if self._ready else "loading"
        context = self._context or _FALLBACK_CONTEXT
        return ModelInfo(self._model_id, "text-generation", "auto", context, self._slots, state)

    @property
    def url(self) -> str:
        """Where the engine listens (a new port after a restart when none was configured)."""
        return self._url

    @property
    def pid(self) -> int | None:
        """The engine's process id (also its process group), or None once closed."""
        process = self._process
        return None if process is None or process.poll() is not None else process.pid

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def restarts(self) -> int:
        """How many times the engine has been started again after it died."""
        return self._restarts

    @property
    def load(self) -> EngineLoad | None:
        """The engine's own queue as of its last metrics scrape (every ``poll_interval``);
        None for an engine without known metrics, or when they cannot be read."""
        return self._load

    def generate(self, params: GenerateParams, cancelled: threading.Event) -> Iterator[Delta]:
        """Stream the completion of ``params`` from the engine.

        The request is sent when iteration starts (in the caller's worker thread).
        Once ``cancelled`` is set the stream's connection is closed, which makes the engine
        drop the request: at the next event, or within 50 ms when the engine is silent
        (the request is queued, or the caller stopped reading). The last delta then
        says ``cancelled``.
        Tools, a JSON answer and logprobs are not passed on (yet): a call that sets one is
        refused (``ValueError`` naming it) rather than answered without it.
        """
        refuse_extras(params, self._model_id)
        path, body = request_body(params, self._served or self._model_id)
        return self._stream(path, body, cancelled)

    def close(self) -> None:
        """Stop the engine (its whole process group) and wait for it to exit."""
        self._closing.set()
        with self._lock:
            self._ready = False
            self._down_reason = "the runner is closed"
            process = self._process
        if process is not None:
            process.stop()
        if self._supervisor is not None:
            self._supervisor.join()
        self._client.close()

    # Streaming

    def _stream(
        self, path: str, body: dict[str, Any], cancelled: threading.Event
    ) -> Iterator[Delta]:
        if not self._ready:
            raise EngineUnavailable(f"{self._model_id} is not available: {self._down_reason}")
        pieces = 0  # the count when the engine gives no usage
        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        finish: str | None = None
        events = SseDecoder()
        abandoned = False
        try:
            # A connection of its own, never reused: closing it is what stops the engine.
            request = self._client.stream("POST", path, json=body, headers=_ONE_USE)
            with request as response:
                if response.status_code != 200:
                    raise self._refusal(response)
                with self._cancelling(response, cancelled):
                    for line in response.iter_lines():
                        if cancelled.is_set():
                            # Leaving the block closes the connection, and the engine aborts.
                            abandoned = True
                            break
                        data = events.feed(line)
                        if data is None:
                            continue
                        if data.strip() == "[DONE]":
                            break
                        chunk = read_chunk(data)
                        prompt_tokens = chunk.prompt_tokens or prompt_tokens
                        completion_tokens = chunk.completion_tokens or completion_tokens
                        if chunk.finish_reason is not None:
                            finish = "length" if chunk.finish_reason == "length" else "stop"
                        if chunk.text:
                            pieces += 1
                            yield Delta(chunk.text, prompt_tokens or 0, pieces)
        except httpx.HTTPError as exc:
            if not cancelled.is_set():
                state = "its process is running" if self.pid else "its process has exited"
                raise EngineUnavailable(
                    f"{self._model_id}: the engine broke off the call ({exc!r}); {state}"
                ) from exc
            abandoned = True  # the cancel watcher shut the connection
        counts = (prompt_tokens or 0, pieces if completion_tokens is None else completion_tokens)
        if abandoned:
            yield Delta("", *counts, "cancelled")
        elif finish is None:
            raise EngineUnavailable(f"{self._model_id}: the engine ended the stream unfinished")
        else:
            yield Delta("", *counts, finish)

    @contextlib.contextmanager
    def _cancelling(self, response: httpx.Response, cancelled: threading.Event) -> Iterator[None]:
        """While the block runs, a set ``cancelled`` shuts the response's connection even
        when the engine sends nothing (a request waiting in its queue, a long prefill)."""
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            yield
            return
        key = id(response)
        with self._lock:
            self._watched[key] = (cancelled, sock)
        try:
            yield
        finally:
            with self._lock:
                self._watched.pop(key, None)

    def _watch_cancels(self) -> None:
        while not self._closing.wait(_CANCEL_POLL):
            with self._lock:  # so no socket is shut after its call has finished with it
                for key, (cancelled, sock) in list(self._watched.items()):
                    if cancelled.is_set():
                        del self._watched[key]
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)

    def _refusal(self, response: httpx.Response) -> EngineError:
        detail = response.read()[:2000].decode(errors="replace")
        with contextlib.suppress(ValueError):
            detail = error_message(json.loads(detail))
        if 400 <= response.status_code < 500:
            return EngineRejected(f"{self._model_id} refused the request: {detail}")
        return EngineUnavailable(
            f"{self._model_id}: the engine answered {response.status_code}: {detail}"
        )

    # The process

    def _launch_and_wait(self) -> None:
        with self._lock:
            if self._closing.is_set():
                raise EngineUnavailable(f"{self._model_id} is closed")
            if self._process is not None:
                self._choose_port()
            logger.info("starting %s: %s", self._model_id, " ".join(self._command))
            process = EngineProcess(self._model_id, self._command, self._env)
            self._process = process
        self._wait_ready(process, time.monotonic() + self._ready_timeout)
        with self._lock:
            if self._closing.is_set():
                raise EngineUnavailable(f"{self._model_id} is closed")
            self._ready = True
        logger.info("%s is ready at %s (pid %d)", self._model_id, self._url, process.pid)

    def _choose_port(self) -> None:
        """Fill ``{host}`` and ``{port}`` in the command. Without a configured port each
        start takes a free one: the last may have been taken while the engine was down."""
        port = self._fixed_port or free_port(self._host)
        self._command = [part.format(host=self._host, port=port) for part in self._template]
        self._url = f"http://{self._host}:{port}"
        self._client.base_url = httpx.URL(self._url)

    def _wait_ready(self, process: EngineProcess, deadline: float) -> None:
        while True:
            if self._closing.is_set():
                raise EngineUnavailable(f"{self._model_id} is closed")
            code = process.poll()
            if code is not None:
                raise EngineStartError(
                    f"{self._model_id}: {process.program} {describe_exit(code)} "
                    "before it was ready" + process.tail()
                )
            if time.monotonic() > deadline:
                process.stop()
                raise EngineStartError(
                    f"{self._model_id}: {process.program} was not ready after "
                    f"{self._ready_timeout:g} s" + process.tail()
                )
            if self._answers():
                return
            self._closing.wait(0.2)

    def _answers(self) -> bool:
        """Whether the engine is ready; learns the model's name and context on the way."""
        try:
            if self._client.get("/health", timeout=2.0).status_code != 200:
                return False
            models = self._client.get("/v1/models", timeout=2.0)
        except httpx.HTTPError:
            return False
        if models.status_code != 200:
            return False
        try:
            first = models.json()["data"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            return True  # it serves something; the configured name is all we have
        if self._served is None and isinstance(first.get("id"), str):
            self._served = first["id"]
        if not self._context and isinstance(first.get("max_model_len"), int):
            self._context = first["max_model_len"]
        return True

    def _supervise(self) -> None:
        backoff = self._restart_backoff
        up_since: float | None = time.monotonic()
        healthy_at = time.monotonic()
        hung = False
        while not self._closing.is_set():
            process = self._process
            assert process is not None
            code = process.poll()
            if code is None:
                if self._healthy():
                    healthy_at = time.monotonic()
                    self._scrape()
                elif time.monotonic() - healthy_at > self._unhealthy_timeout:
                    logger.warning(
                        "%s: engine has not answered /health for %g s; stopping it",
                        self._model_id,
                        self._unhealthy_timeout,
                    )
                    self._ready = False
                    hung = True
                    process.stop()  # and the next turn starts it again
                    continue
                self._closing.wait(self._poll_interval)
                continue
            self._ready = False
            self._load = None
            ended = "stopped answering /health" if hung else describe_exit(code)
            hung = False
            self._down_reason = f"its engine {ended} and is being restarted"
            if up_since is not None and time.monotonic() - up_since > _STABLE_AFTER:
                backoff = self._restart_backoff
            process.stop()  # workers it left behind
            logger.warning(
                "%s: engine %s; restarting in %g s%s",
                self._model_id,
                ended,
                backoff,
                process.tail(),
            )
            if self._closing.wait(backoff):
                return
            backoff = min(backoff * 2, MAX_BACKOFF)
            self._restarts += 1
            try:
                self._launch_and_wait()
            except EngineUnavailable:
                return  # closed meanwhile
            except EngineStartError as exc:
                logger.warning("%s", str(exc).splitlines()[0])
                up_since = None
            else:
                up_since = healthy_at = time.monotonic()

    def _healthy(self) -> bool:
        try:
            return self._client.get("/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _scrape(self) -> None:
        if self._metrics is None:
            return
        try:
            response = self._client.get("/metrics", timeout=2.0)
            response.raise_for_status()
        except httpx.HTTPError:
            self._load = None
            return
        running, waiting = self._metrics
        values = parse_metrics(response.text, (running, waiting))
        if running in values:
            self._load = EngineLoad(int(values[running]), int(values.get(waiting, 0)))
        else:
            self._load = None
