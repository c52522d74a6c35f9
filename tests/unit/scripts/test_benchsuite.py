"""The suite's own pieces that need no process: the ideal routing simulation, its arrivals,
the client's HTTP parsing and checks, the bare echo's answer and the core split."""

from __future__ import annotations

import asyncio
import json

import pytest

from scripts.benchsuite import loadgen, routing
from scripts.benchsuite.echo_server import completion
from scripts.benchsuite.loadgen import CallError, Connection, Target, check, split_cores
from scripts.benchsuite.outcome import Check


def test_ideal_sends_each_call_where_it_finishes_first() -> None:
    # Two nodes taking 1 s and 3 s; three calls at once: the fast node finishes each of them
    # before the slow one would, until its queue is 3 s long (a tie goes to the first node).
    assert routing.ideal([0.0, 0.0, 0.0, 0.0], [1.0, 3.0]) == [1.0, 2.0, 3.0, 3.0]
    # Once the queues are empty a call waits for nothing.
    assert routing.ideal([0.0, 10.0], [1.0, 3.0]) == [1.0, 1.0]


def test_ideal_with_slots_runs_calls_side_by_side() -> None:
    assert routing.ideal([0.0, 0.0, 0.0], [2.0], slots=2) == [2.0, 2.0, 4.0]


def test_arrivals_are_the_same_for_a_seed_and_as_many_as_the_rate_says() -> None:
    arrivals = routing.poisson_arrivals(50.0, 20.0, seed=700)
    assert arrivals == routing.poisson_arrivals(50.0, 20.0, seed=700)
    assert arrivals == sorted(arrivals)
    assert arrivals[0] > 0
    assert arrivals[-1] < 20.0
    assert 900 < len(arrivals) < 1100


def test_the_routing_nodes_and_litellm_backends_have_the_same_speeds() -> None:
    assert routing.capacity() == pytest.approx(1 / 0.04 + 1 / 0.04 + 1 / 0.12)
    delays = [float(flags[flags.index("--echo-delay") + 1]) for flags in routing.nodes().values()]
    assert delays == [delay for delay, _ in routing.litellm_groups()]
    assert [rpm for _, rpm in routing.litellm_groups()] == [1500, 1500, 500]


def test_a_check_not_measured_is_neither_met_nor_missed() -> None:
    assert Check("t", "m", None).verdict == "not measured"
    assert Check("t", "m", False).row() == "| t | m | missed |"


def test_the_bare_echo_answers_the_last_message_as_a_chat_completion() -> None:
    text, data = completion({"model": "m", "messages": [{"role": "user", "content": "a b"}]})
    reply = json.loads(data)
    assert text == "a b"
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": "a b"}
    assert reply["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_a_request_is_prepared_bytes_with_the_target_headers() -> None:
    request = Target("t", "http://127.0.0.1:9", {"authorization": "Bearer k"}, "m").request("hi")
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[:3] == [
        b"POST /v1/chat/completions HTTP/1.1",
        b"host: 127.0.0.1:9",
        b"authorization: Bearer k",
    ]
    assert f"content-length: {len(body)}".encode() in head
    assert json.loads(body) == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def answer(text: str) -> bytes:
    return json.dumps({"choices": [{"message": {"content": text}}]}).encode()


def test_an_answer_is_checked_for_status_shape_and_echo() -> None:
    check(200, answer("hi"), "hi")
    with pytest.raises(CallError, match="HTTP 503"):
        check(503, b"busy", "hi")
    with pytest.raises(CallError, match="not a chat completion"):
        check(200, b"{}", "hi")
    with pytest.raises(CallError, match="echoed 'ho', sent 'hi'"):
        check(200, answer("ho"), "hi")


def test_the_client_reads_sized_and_chunked_answers_on_one_connection() -> None:
    body = answer("hi")
    replies = [
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (5, body[:5])
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body) - 5, body[5:]),
        b"HTTP/1.1 429 Too Many\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
    ]
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while replies:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            writer.write(replies.pop(0))
            await writer.drain()
        writer.close()

    async def main() -> list[tuple[int, bytes]]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        connection = Connection(f"http://127.0.0.1:{port}")
        request = Target("t", f"http://127.0.0.1:{port}").request("hi")
        try:
            return [await connection.call(request) for _ in range(3)]
        finally:
            connection.close()
            server.close()

    assert asyncio.run(main()) == [(200, body), (200, body), (429, b"no")]
    assert connections == 1


def test_the_client_keeps_a_quarter_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert split_cores() == (set(range(12, 16)), set(range(12)))
    assert split_cores(1) == ({15}, set(range(15)))
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert split_cores() == ({1}, {0})
    assert split_cores(5) == ({1}, {0})
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {3})
    assert split_cores() == ({3}, {3})


async def _echo_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every chat call at once with its last message, on one keep-alive connection."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body = json.loads(await reader.readexactly(length))
            _, data = completion(body)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
            await writer.drain()
    except asyncio.IncompleteReadError:
        writer.close()


def test_closed_and_open_loops_count_only_answered_calls() -> None:
    async def main() -> tuple[loadgen.Run, loadgen.Run, dict[str, list[float]]]:
        server = await asyncio.start_server(_echo_server, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        target = Target("echo", url)
        try:
            closed = await loadgen.closed_loop(target, "a b", 4, seconds=0.2, warmup=0.05)
            opened = await loadgen.open_loop(target, "a b", [0.0, 0.0, 0.01, 0.05])
            turns = await loadgen.alternating([target, Target("again", url)], "a b", 3, 1)
            return closed, opened, turns
        finally:
            server.close()

    closed, opened, turns = asyncio.run(main())
    assert closed.errors == 0 and closed.latencies and closed.seconds == 0.2
    assert closed.rate == len(closed.latencies) / 0.2
    assert opened.errors == 0 and len(opened.latencies) == 4
    assert {name: len(samples) for name, samples in turns.items()} == {"echo": 3, "again": 3}


def test_a_loop_counts_the_calls_that_fail() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy")
        await writer.drain()
        writer.close()

    async def main() -> loadgen.Run:
        server = await asyncio.start_server(refuse, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            return await loadgen.open_loop(Target("busy", url), "a", [0.0, 0.0])
        finally:
            server.close()

    run = asyncio.run(main())
    assert (run.latencies, run.errors) == ([], 2)
    assert run.first_error.startswith("CallError: HTTP 503")


def test_a_connection_the_server_closed_while_idle_is_reopened_once() -> None:
    body = answer("hi")
    connections = 0

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Answers one call, then closes without saying so, as at a keep-alive timeout.
        nonlocal connections
        connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    async def main() -> list[tuple[int, bytes]]:
        server = await asyncio.start_server(once, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        connection = Connection(url)
        try:
            first = await connection.call(Target("t", url).request("hi"))
            await asyncio.sleep(0.05)  # the server's close arrives
            return [first, await connection.call(Target("t", url).request("hi"))]
        finally:
            connection.close()
            server.close()

    assert asyncio.run(main()) == [(200, body), (200, body)]
    assert connections == 2
