"""The engine runner, driving a stand-in OpenAI-compatible server process
(``tests/integration/fake_engine.py``) on a free port of 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import pytest
import trio
import trio.testing

from node.p2p.rpc_client import RemoteError, RpcClient
from node.p2p.rpc_server import Caller, RpcServer
from node.p2p.streams import TrioByteStream
from node.worker.handlers import NodeService
from node.worker.roster import Roster
from node.worker.runners import EngineRunner, EngineSpec, Runner
from node.worker.runners.base import Delta
from node.worker.runners.engine import EngineLoad
from node.worker.runners.engine_process import free_port
from node.worker.runners.engine_wire import (
    MAX_EVENT_BYTES,
    Chunk,
    EngineProtocolError,
    EngineStartError,
    EngineUnavailable,
    SseDecoder,
    parse_metrics,
    read_chunk,
    request_body,
)
from protocols import ChatMessage, ErrorCode, GenerateParams, Tool, ToolCall, assembled

FAKE = Path(__file__).with_name("fake_engine.py")
Start = Callable[..., EngineRunner]


@pytest.fixture
def start() -> Iterator[Start]:
    """Starts fake engines through the runner; all of them are stopped after the test."""
    runners: list[EngineRunner] = []

    def start(*fake_args: str, **options: Any) -> EngineRunner:
        defaults: dict[str, Any] = {"engine": "vllm", "ready_timeout": 30.0, "poll_interval": 0.05}
        options = defaults | {"restart_backoff": 0.1} | options
        command = [sys.executable, str(FAKE), "--port", "{port}", *fake_args]
        runner = EngineRunner.start(EngineSpec("fake", tuple(command), **options))
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        runner.close()
    left = engine_processes()
    for process in left:  # so that a broken close does not leak them past this test
        process.kill()
    assert not left, "an engine process outlived its runner"


def engine_processes() -> list[psutil.Process]:
    """Fake engines started by this test process and still alive."""
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if str(FAKE) in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


def params(**kw: Any) -> GenerateParams:
    kw.setdefault("model", "fake")
    if "messages" not in kw:
        kw.setdefault("prompt", "one two three four")
    return GenerateParams(**kw)


def run(runner: EngineRunner, cancelled: threading.Event | None = None, **kw: Any) -> list[Delta]:
    return list(runner.generate(params(**kw), cancelled or threading.Event()))


def stats(runner: EngineRunner) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(runner.url + "/stats", trust_env=False).json()
    return body


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie no longer does)."""
    try:
        os.kill(pid, 0)
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except (ProcessLookupError, psutil.NoSuchProcess):
        return False


def test_start_waits_until_the_engine_is_healthy(start: Start) -> None:
    runner = start("--ready-after", "0.5")
    health = httpx.get(runner.url + "/health", trust_env=False)
    assert health.status_code == 200
    assert isinstance(runner, Runner)
    info = runner.info
    assert (info.id, info.state, info.max_batch) == ("fake", "ready", 1)
    assert info.context_length == 4096  # from the engine's model list


def test_chat_streams_deltas_and_usage(start: Start) -> None:
    runner = start(slots=3)
    messages = [ChatMessage("system", "be brief"), ChatMessage("user", "red green blue")]
    deltas = run(runner, messages=messages)
    assert [d.text for d in deltas] == ["red", " green", " blue", ""]
    assert deltas[-1] == Delta("", 5, 3, "stop")
    assert runner.info.max_batch == 3
    body = stats(runner)["requests"][-1]
    assert body["model"] == "fake-model"  # the name the engine lists, not the node's id
    assert body["messages"][1] == {"role": "user", "content": "red green blue"}
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_max_tokens_ends_with_length(start: Start) -> None:
    runner = start()
    deltas = run(runner, prompt="a b c d e f", max_tokens=2)
    assert "".join(d.text for d in deltas) == "a b"
    assert deltas[-1].finish_reason == "length"
    assert (deltas[-1].prompt_tokens, deltas[-1].completion_tokens) == (6, 2)
    assert stats(runner)["requests"][-1]["max_tokens"] == 2


def test_stop_and_sampling_are_passed_through(start: Start) -> None:
    runner = start()
    deltas = run(runner, prompt="one two three four", stop=["thr"], seed=7, temperature=0.5)
    assert "".join(d.text for d in deltas) == "one two "
    assert deltas[-1].finish_reason == "stop"
    body = stats(runner)["requests"][-1]
    assert (body["stop"], body["seed"], body["temperature"]) == (["thr"], 7, 0.5)
    assert "top_p" not in body  # unset: the engine applies the model's own default
    assert body["prompt"] == "one two three four"


WEATHER = Tool("get_weather", "The weather.", {"type": "object"})


def test_tools_pass_through_and_calls_stream_back(start: Start) -> None:
    runner = start()
    call = ToolCall("call_1", "get_weather", '{"city": "rome"}')
    history = [
        ChatMessage("user", "rome"),
        ChatMessage("assistant", "", [call]),
        ChatMessage("tool", "sunny", tool_call_id="call_1"),
        ChatMessage("user", "paris please"),
    ]
    deltas = run(
        runner,
        messages=history,
        tools=[WEATHER],
        tool_choice="function",
        tool_name="get_weather",
        parallel_tool_calls=False,
    )
    parts = [p for d in deltas for p in d.tool_calls]
    assert parts[0].id and parts[0].name == "get_weather" and len(parts) == 4
    (made,) = assembled(parts)
    assert made.arguments == '{"words": ["paris", "please"]}'
    assert deltas[-1].finish_reason == "tool_calls"
    body = stats(runner)["requests"][-1]
    assert body["tools"] == [WEATHER.template_form()]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assert body["messages"][1]["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "rome"}'},
        }
    ]
    assert body["messages"][2]["tool_call_id"] == "call_1"


def test_json_answers_and_logprobs_pass_through(start: Start) -> None:
    runner = start()
    ask = [ChatMessage("user", "red green")]
    deltas = run(
        runner, messages=ask, response_format="json_schema", json_schema={"type": "object"}
    )
    assert json.loads("".join(d.text for d in deltas)) == {"echo": "red green"}
    assert stats(runner)["requests"][-1]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}},
    }
    deltas = run(runner, messages=ask, logprobs=True, top_logprobs=1)
    logprobs = [lp for d in deltas for lp in d.logprobs]
    assert [lp.token for lp in logprobs] == ["red", " green"]
    assert logprobs[0].logprob == -0.5 and logprobs[0].top == (("red", -0.5),)
    # The legacy endpoint's logprobs come in another shape: refused by name, not dropped.
    with pytest.raises(ValueError, match=r"^logprobs: "):
        run(runner, prompt="red", logprobs=True)


def test_a_malformed_tool_call_from_the_engine_is_its_fault() -> None:
    bad = '{"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "x"}]}}]}'
    with pytest.raises(EngineProtocolError, match="tool call starts with both"):
        read_chunk(bad)


def test_without_usage_the_pieces_are_counted(start: Start) -> None:
    runner = start("--no-usage")
    deltas = run(runner, prompt="one two three")
    assert deltas[-1] == Delta("", 0, 3, "stop")


def test_a_refused_request_is_the_callers_mistake(start: Start) -> None:
    runner = start(served_model="another-model")
    with pytest.raises(ValueError, match="refused the request: model 'another-model' not found"):
        run(runner)


def test_cancelling_closes_the_stream_and_the_engine_sees_it(start: Start) -> None:
    runner = start("--delay", "0.05")
    cancelled = threading.Event()
    deltas: list[Delta] = []
    for delta in runner.generate(params(prompt=" ".join(["word"] * 200)), cancelled):
        deltas.append(delta)
        if len(deltas) == 2:
            cancelled.set()
    assert deltas[-1].finish_reason == "cancelled"
    assert len(deltas) <= 4
    wait_until(lambda: stats(runner)["disconnects"] == 1)
    wait_until(lambda: runner.load == EngineLoad(0, 0))


def test_a_call_waiting_in_the_engine_queue_is_cancelled_at_once(start: Start) -> None:
    runner = start("--delay", "0.05", "--slots", "1")
    busy, waiting = threading.Event(), threading.Event()
    long = params(prompt=" ".join(["word"] * 400))  # 20 s of answer
    answers: dict[str, list[Delta]] = {}

    def call(name: str, cancelled: threading.Event) -> None:
        answers[name] = list(runner.generate(long, cancelled))

    first = threading.Thread(target=call, args=("first", busy))
    second = threading.Thread(target=call, args=("second", waiting))
    first.start()
    try:
        wait_until(lambda: runner.load == EngineLoad(1, 0))
        second.start()
        wait_until(lambda: runner.load == EngineLoad(1, 1))
        waiting.set()  # the engine sends this call nothing while it waits for a slot
        second.join(timeout=5.0)
        assert not second.is_alive()
        assert answers["second"] == [Delta("", 0, 0, "cancelled")]
        wait_until(lambda: stats(runner)["disconnects"] == 1)
        wait_until(lambda: runner.load == EngineLoad(1, 0))
    finally:
        busy.set()
        waiting.set()
        for thread in (first, second):
            if thread.ident is not None:
                thread.join()


@pytest.mark.parametrize("engine", ["vllm", "llama-server"])
def test_load_is_read_from_the_engine_metrics(start: Start, engine: str) -> None:
    runner = start("--delay", "0.05", "--slots", "1", engine=engine)
    wait_until(lambda: runner.load == EngineLoad(0, 0))
    cancelled = threading.Event()
    long = params(prompt=" ".join(["word"] * 400))
    threads = [
        threading.Thread(target=lambda: list(runner.generate(long, cancelled))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: runner.load == EngineLoad(1, 1))
    finally:
        cancelled.set()
        for thread in threads:
            thread.join()


def test_an_engine_without_metrics_has_no_load(start: Start) -> None:
    runner = start(engine="openai")
    run(runner)
    assert runner.load is None


def test_a_dead_engine_is_restarted(start: Start) -> None:
    runner = start(restart_backoff=0.5)
    first = runner.pid
    assert first is not None
    deltas: list[Delta] = []
    with pytest.raises(EngineUnavailable, match="broke off the call"):
        deltas.extend(runner.generate(params(prompt="one CRASH"), threading.Event()))
    assert [d.text for d in deltas] == ["one"]
    wait_until(lambda: not runner.ready)
    assert runner.info.state == "loading"
    with pytest.raises(EngineUnavailable, match="exited with code 3 and is being restarted"):
        run(runner)
    wait_until(lambda: runner.ready)
    assert runner.restarts == 1
    assert runner.pid not in (None, first)
    assert not alive(first)
    assert run(runner, prompt="back again")[-1] == Delta("", 2, 2, "stop")


def test_an_engine_that_stops_answering_health_is_restarted(start: Start) -> None:
    runner = start(unhealthy_timeout=0.5)
    first = runner.pid
    assert first is not None
    httpx.post(runner.url + "/sick", trust_env=False).raise_for_status()
    wait_until(lambda: runner.restarts == 1 and runner.ready)
    assert runner.pid not in (None, first)
    assert not alive(first)
    assert run(runner)[-1].finish_reason == "stop"


def test_an_engine_that_exits_at_once_fails_the_start(start: Start) -> None:
    crash = "import sys; print('no such model: nothing', file=sys.stderr); sys.exit(3)"
    with pytest.raises(EngineStartError) as failure:
        EngineRunner.start(EngineSpec("fake", (sys.executable, "-c", crash), ready_timeout=30.0))
    message = str(failure.value)
    assert "exited with code 3 before it was ready" in message
    assert "no such model: nothing" in message


def test_a_restart_takes_another_port_when_its_own_was_taken(start: Start) -> None:
    runner = start(restart_backoff=0.5)
    old = httpx.URL(runner.url).port
    assert old is not None
    with pytest.raises(EngineUnavailable):
        run(runner, prompt="CRASH")
    wait_until(lambda: not runner.ready)
    with socket.socket() as squatter:  # another program took the port meanwhile
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", old))
        squatter.listen()
        wait_until(lambda: runner.restarts == 1 and runner.ready)
    assert httpx.URL(runner.url).port != old
    assert run(runner)[-1].finish_reason == "stop"


def test_a_configured_port_is_kept_across_restarts(start: Start) -> None:
    port = free_port()
    runner = start(port=port, restart_backoff=0.1)
    assert runner.url == f"http://127.0.0.1:{port}"
    with pytest.raises(EngineUnavailable):
        run(runner, prompt="CRASH")
    wait_until(lambda: runner.restarts == 1 and runner.ready)
    assert runner.url == f"http://127.0.0.1:{port}"
    assert run(runner)[-1].finish_reason == "stop"


def test_a_missing_program_fails_the_start() -> None:
    with pytest.raises(EngineStartError, match="could not run no-such-engine-here"):
        EngineRunner.start(EngineSpec("fake", ("no-such-engine-here", "--port", "{port}")))


def test_an_engine_never_ready_fails_the_start_and_is_stopped(start: Start) -> None:
    with pytest.raises(EngineStartError, match=r"was not ready after 0\.5 s"):
        start("--ready-after", "60", ready_timeout=0.5)
    assert not engine_processes()


def test_close_stops_the_engine_and_its_workers(start: Start) -> None:
    runner = start("--worker")
    pid = runner.pid
    worker = stats(runner)["worker"]
    assert pid is not None and alive(pid) and alive(worker)
    try:
        runner.close()
        assert runner.pid is None
        assert not alive(pid)
        wait_until(lambda: not alive(worker), timeout=5.0)
        with pytest.raises(EngineUnavailable, match="closed"):
            run(runner)
    finally:
        if alive(worker):
            os.kill(worker, signal.SIGKILL)


@asynccontextmanager
async def through_a_node(runner: EngineRunner) -> AsyncIterator[RpcClient]:
    """A gateway's RPC client to a node service that serves ``runner`` as ``fake``."""
    service = NodeService(Roster.of({"fake": runner}, 2, 2), lambda: 0)
    server = RpcServer(service.handlers, lambda cert, peer: Caller(peer, "gateway"))
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve, TrioByteStream(right), "gateway")
        client = RpcClient(TrioByteStream(left), b"cert")
        await nursery.start(client.run)
        yield client
        nursery.cancel_scope.cancel()


async def test_a_node_serves_the_engine_model(start: Start) -> None:
    runner = start()
    async with through_a_node(runner) as client:
        async with client.open_call("generate", params(prompt="one two three").to_wire()) as call:
            text = "".join([chunk["text"] async for chunk in call])
        assert text == "one two three"
        assert call.result == {"finish_reason": "stop", "prompt_tokens": 3, "completion_tokens": 3}
        with pytest.raises(RemoteError) as refused:
            await client.call("generate", params(prompt="x", model="absent").to_wire())
        assert refused.value.code is ErrorCode.MODEL_NOT_FOUND


async def test_a_caller_leaving_the_node_stops_the_engine_stream(start: Start) -> None:
    runner = start("--delay", "0.05")
    async with through_a_node(runner) as client:
        long = params(prompt=" ".join(["word"] * 400)).to_wire()
        async with client.open_call("generate", long) as call:
            async for _ in call:
                break
        with trio.fail_after(10):
            while stats(runner)["disconnects"] != 1:
                await trio.sleep(0.02)


async def test_an_engine_refusal_is_a_bad_request_at_the_node(start: Start) -> None:
    runner = start(served_model="another-model")
    async with through_a_node(runner) as client:
        with pytest.raises(RemoteError) as refused:
            await client.call("generate", params().to_wire())
        assert refused.value.code is ErrorCode.BAD_REQUEST


async def test_a_restarting_engine_is_unavailable_at_the_node(start: Start) -> None:
    runner = start(restart_backoff=30.0)  # down long enough to be asked meanwhile
    async with through_a_node(runner) as client:
        with pytest.raises(RemoteError) as broke:
            await client.call("generate", params(prompt="one CRASH").to_wire())
        assert broke.value.code is ErrorCode.UNAVAILABLE  # the gateway tries another node
        with pytest.raises(RemoteError) as down:
            await client.call("generate", params().to_wire())
        assert down.value.code is ErrorCode.UNAVAILABLE


def test_server_sent_events_are_decoded() -> None:
    events = SseDecoder()
    lines = [": keep-alive", "", "data: {", "data: }", "", "event: x", "data:[DONE]", ""]
    assert [events.feed(line) for line in lines] == [
        None, None, None, None, "{\n}", None, None, "[DONE]",
    ]  # fmt: skip
    with pytest.raises(EngineProtocolError):
        for _ in range(3):
            events.feed("data: " + "x" * (MAX_EVENT_BYTES // 2))


def test_stream_chunks_of_both_endpoints_are_read() -> None:
    chat = '{"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": null}]}'
    assert read_chunk(chat) == Chunk("hi")
    text = '{"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}'
    assert read_chunk(text) == Chunk("", "length")
    usage = '{"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}}'
    assert read_chunk(usage) == Chunk("", None, 3, 5)
    with pytest.raises(EngineUnavailable, match="out of memory"):
        read_chunk('{"error": {"message": "out of memory", "code": 500}}')
    for garbage in ("not json", "[1, 2]"):
        with pytest.raises(EngineProtocolError):
            read_chunk(garbage)


def test_request_bodies_carry_only_what_the_call_sets() -> None:
    path, body = request_body(params(prompt="p"), "served")
    assert path == "/v1/completions"
    assert body["prompt"] == "p" and body["model"] == "served"
    assert "stop" not in body and "seed" not in body and "messages" not in body
    path, body = request_body(params(messages=[ChatMessage("user", "u")], stop=["x"]), "m")
    assert path == "/v1/chat/completions"
    assert body["messages"] == [{"role": "user", "content": "u"}]
    assert body["stop"] == ["x"] and "prompt" not in body


def test_metrics_are_summed_over_labels() -> None:
    text = (
        "# HELP vllm:num_requests_running Number of requests running.\n"
        'vllm:num_requests_running{model_name="a b",engine="0"} 2.0\n'
        'vllm:num_requests_running{model_name="a",engine="1"} 1.0 1700000000\n'
        "vllm:num_requests_waiting 4\n"
        "vllm:num_requests_waiting_total 99\n"
        "vllm:broken nan-ish\n"
    )
    wanted = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:broken")
    assert parse_metrics(text, wanted) == {
        "vllm:num_requests_running": 3.0,
        "vllm:num_requests_waiting": 4.0,
    }
