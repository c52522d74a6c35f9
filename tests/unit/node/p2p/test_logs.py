"""Log lines: one per event in text and in JSON, stamped with the peer and the request id
of the call being served; the id travels with an RPC call to the peer serving it."""

from __future__ import annotations

import inspect
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from gateway.mesh.subscriptions import MeshSubscriptions
from gateway.routing.tracker import Tracker
from node.p2p import logs
from node.p2p.rpc_client import RpcClient
from node.p2p.rpc_server import Caller, RpcServer
from node.p2p.streams import TrioByteStream
from tests.unit.node.p2p.test_rpc import CERT, authorize


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO, io.StringIO]]:
    """A logger writing both formats into strings."""
    text, machine = io.StringIO(), io.StringIO()
    logger = logging.getLogger("bitinglip.test.logs")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handlers = [logs.handler("text", text), logs.handler("json", machine)]
    for h in handlers:
        logger.addHandler(h)
    logs.set_peer("12D3KooWpeer")
    try:
        yield logger, text, machine
    finally:
        for h in handlers:
            logger.removeHandler(h)
        logs.set_peer("")


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_a_json_line_has_time_level_logger_message_and_peer(
    logged: tuple[logging.Logger, io.StringIO, io.StringIO],
) -> None:
    logger, _, machine = logged
    logger.warning("node %s is slow", "n1")
    (line,) = lines(machine)
    record = json.loads(line)
    assert set(record) == {"time", "level", "logger", "message", "peer"}
    assert record["level"] == "warning"
    assert record["logger"] == "bitinglip.test.logs"
    assert record["message"] == "node n1 is slow"
    assert record["peer"] == "12D3KooWpeer"
    assert record["time"].endswith("Z") and record["time"][10] == "T"


async def test_the_request_id_of_the_task_is_on_its_lines(
    logged: tuple[logging.Logger, io.StringIO, io.StringIO],
) -> None:
    logger, text, machine = logged

    async def serve(request_id: str | None) -> None:
        logs.set_request_id(request_id)
        logger.info("serving")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, "req-1")
        nursery.start_soon(serve, None)
    ids = sorted(str(json.loads(line).get("request_id")) for line in lines(machine))
    assert ids == ["None", "req-1"]
    assert sorted(lines(text))[0].endswith("bitinglip.test.logs [req req-1]: serving")
    assert logs.current_request_id() is None  # the tasks' ids stayed in the tasks


def test_a_traceback_and_line_breaks_stay_on_one_line(
    logged: tuple[logging.Logger, io.StringIO, io.StringIO],
) -> None:
    logger, text, machine = logged
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logger.exception("two\nlines")
    logger.info("GET /a\r\n12:00:00 INFO forged")
    shown, path = lines(text)
    assert path.endswith(": GET /a\\r\\n12:00:00 INFO forged")
    assert "ERROR" in shown and "two\\nlines" in shown
    assert "Traceback" in shown and "ValueError: bad\\nvalue" in shown
    line, _ = lines(machine)
    record = json.loads(line)
    assert record["message"] == "two\nlines"
    assert record["exc"].startswith("Traceback") and record["exc"].endswith("bad\nvalue")


def test_the_format_comes_from_the_flag_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    assert logs.log_format(None) == "text"
    monkeypatch.setenv(logs.FORMAT_ENV, "json")
    assert logs.log_format(None) == "json"
    assert logs.log_format("text") == "text"
    monkeypatch.setenv(logs.FORMAT_ENV, "xml")
    with pytest.raises(ValueError, match="'xml' is not one of text, json"):
        logs.log_format(None)


def test_new_request_ids_are_safe_and_distinct() -> None:
    from protocols import is_request_id

    made = {logs.new_request_id() for _ in range(100)}
    assert len(made) == 100 and all(is_request_id(i) for i in made)


async def test_an_rpc_call_carries_the_callers_request_id_to_the_server() -> None:
    seen: list[str | None] = []

    async def whoami(params: dict[str, Any], caller: Caller, emit: Any) -> dict[str, Any]:
        seen.append(logs.current_request_id())
        return {}

    left, right = trio.testing.memory_stream_pair()
    server = RpcServer({"whoami": whoami}, authorize)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve, TrioByteStream(right), "peer-a")
        client = RpcClient(TrioByteStream(left), CERT)
        await nursery.start(client.run)
        await client.call("whoami", {})
        logs.set_request_id("call-7")
        await client.call("whoami", {})
        nursery.cancel_scope.cancel()
    assert seen == [None, "call-7"]


async def test_a_task_that_outlives_the_call_starting_it_does_not_carry_its_id() -> None:
    marked: list[str | None] = []
    unmarked: list[str | None] = []

    @logs.outside_calls
    async def connection(into: list[str | None]) -> None:
        into.append(logs.current_request_id())

    async def helper(into: list[str | None]) -> None:
        into.append(logs.current_request_id())

    async def call() -> None:
        logs.set_request_id("call-1")
        nursery.start_soon(connection, marked)
        nursery.start_soon(helper, unmarked)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
    assert (marked, unmarked) == ([None], ["call-1"])
    # The gateway's long-lived tasks a call's model lookup may start are marked.
    for task in (Tracker._hold_connection, MeshSubscriptions._subscribe):
        assert inspect.unwrap(task) is not task
