"""The REPL without a terminal: joining lines, completion, settings and the tables it shows."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from gateway.client.repl_commands import SETTINGS, unchattable
from gateway.client.repl_input import Assembler, candidates
from gateway.client.repl_render import models_table, peers_table, stats_line, usage_table

# Without a terminal.


def test_lines_join_into_messages() -> None:
    a = Assembler()
    assert a.feed("one \\") is None and a.pending
    assert a.feed("two") == "one \ntwo" and not a.pending
    assert a.feed('"""start') is None
    assert a.feed("") is None
    assert a.feed('end"""') == "start\n\nend"
    assert a.feed('"""') is None and a.feed('"""') == ""
    assert a.feed('"""inline"""') == "inline"
    a.feed("dropped \\")
    a.reset()
    assert a.feed("plain") == "plain"


def test_completion_candidates() -> None:
    commands = ["/model", "/models", "/quit", "/set"]
    assert candidates("", "/mo", commands, ["echo"], list(SETTINGS)) == ["/model", "/models"]
    assert candidates("", "hel", commands, ["echo"], list(SETTINGS)) == []
    assert candidates("/model ", "e", commands, ["echo", "gpt"], list(SETTINGS)) == ["echo"]
    assert candidates("/set ", "t", commands, [], list(SETTINGS)) == ["temperature", "top_p"]
    assert candidates("hello ", "/mo", commands, [], list(SETTINGS)) == []


def test_only_chat_models_are_chatted_with() -> None:
    tasks = {"echo": "text-generation", "sd": "text-to-image"}
    assert unchattable(tasks, "echo") is None
    assert unchattable(tasks, "sd") == "'sd' makes images, it does not chat (chat models: echo)"
    assert unchattable(tasks, "gpt") == "unknown model 'gpt'; available: echo"


def test_settings_are_checked() -> None:
    assert SETTINGS["top_p"].parse("top_p", "1") == 1.0
    assert SETTINGS["max_tokens"].parse("max_tokens", "64") == 64
    for name, bad in (("top_p", "0"), ("temperature", "-1"), ("max_tokens", "1.5")):
        with pytest.raises(ValueError, match=f"^{name} takes "):
            SETTINGS[name].parse(name, bad)
    with pytest.raises(ValueError):
        SETTINGS["temperature"].parse("temperature", "nan")


def text(renderable: object) -> str:
    out = io.StringIO()
    Console(file=out, width=160, no_color=True).print(renderable)
    return out.getvalue()


def test_tables_from_api_bodies() -> None:
    usage = {
        "object": "list",
        "data": [
            {
                "date": "2025-03-01",
                "model": "echo",
                "requests": 3,
                "prompt_tokens": 1200,
                "completion_tokens": 45,
                "images": 0,
            }
        ],
        "totals": {"requests": 3, "prompt_tokens": 1200, "completion_tokens": 45, "images": 0},
        "limits": {"plan": "free", "requests_per_minute": 60},
    }
    shown = text(usage_table(usage))
    assert "2025-03-01" in shown and "1,200" in shown and "total" in shown
    assert "limits: plan free, requests_per_minute 60" in shown
    assert "no usage yet" in text(usage_table({"data": [], "totals": {}, "limits": {}}))

    node = {
        "peer_id": "12D3KooWAAAAnode1234",
        "role": "node",
        "addrs": [],
        "version": "0.1.0",
        "hardware": {
            "backend": "cpu",
            "device_name": "cpu",
            "memory": "RAM",
            "memory_total": 0,
            "memory_free": 0,
        },
        "models": [{"id": "echo", "task": "text-generation", "dtype": "none", "state": "ready"}],
        "load": {"inflight": 1, "queued": 0, "capacity": 8, "tokens_per_s": 3.0, "draining": False},
        "last_seen": 2.0,
        "healthy": True,
    }
    shown = text(peers_table([node, {"peer_id": "malformed"}]))
    assert "node1234" in shown and "echo" in shown and "1/0/8" in shown and "2s ago" in shown
    assert "knows no peers" in text(peers_table([]))

    models = [{"id": "echo", "peers": [{"peer_id": "x" * 8 + "node1234", "state": "ready"}]}]
    assert "echo *  text-generation  1/1" in text(
        models_table(models, {"echo": "text-generation"}, "echo")
    )
    assert stats_line(10, 0.5, "12D3KooWAAAAnode1234") == (
        "10 tokens · 0.50 s · 20.0 tokens/s · node node1234"
    )


def test_tables_fit_a_narrow_terminal() -> None:
    usage = {
        "data": [{"date": "2025-03-01", "model": "HuggingFaceTB/SmolLM2-135M-Instruct"}],
        "totals": {"requests": 1_234_567, "prompt_tokens": 98_765_432, "completion_tokens": 5},
    }
    for width in (80, 40):
        out = io.StringIO()
        Console(file=out, width=width, no_color=True).print(usage_table(usage, width))
        lines = out.getvalue().splitlines()
        assert all(len(line.rstrip()) <= width for line in lines)
        assert lines[0].split()[:2] == ["DATE", "MODEL"] and "total" in out.getvalue()
    note = " ".join(line.strip() for line in lines if line.strip())
    assert note.endswith(
        "not shown for width: PROMPT, COMPLETION, IMAGES, AUDIO S (a wider terminal shows all)"
    )
