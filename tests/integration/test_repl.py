"""``bitinglip repl`` and ``bitinglip login`` in a real terminal against a live local swarm.

One gateway and one echo node (0.05 s a word, so answers visibly stream) serve every test
in this module; each test drives its own REPL through a pseudo-terminal with pexpect. The
pieces that need no terminal are in tests/unit/gateway/client/test_repl.py.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pexpect
import pytest
from PIL import Image

from tests.integration.conftest import LocalSwarmFixture
from tests.tiny_models import build_tiny_sd

PROMPT = "echo> "
UP = "\x1b[A"
SENTENCE = (
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
    " sixteen"
)


@dataclass
class Live:
    url: str
    token: str
    node: str
    painter: str  # the image model's id: a path

    def inflight(self) -> int:
        headers = {"Authorization": f"Bearer {self.token}"}
        models = httpx.get(f"{self.url}/v1/models", headers=headers, timeout=5).json()
        return sum(int(p["inflight"]) for m in models["data"] for p in m["peers"])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    swarm = LocalSwarmFixture(tmp_path_factory.mktemp("swarm"))
    try:
        gateway = swarm.start_gateway()
        boot = [str(gateway["addrs"][0])]  # type: ignore[index]
        swarm.start_node("node-0", boot, ["echo"], ["--echo-delay", "0.05"])
        painter = str(build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd"))
        swarm.start_node("node-1", boot, [painter])
        swarm.wait_ready(["node-0", "node-1"])
        url = swarm.url()
        deadline = time.monotonic() + 30
        while len(httpx.get(f"{url}/health", timeout=5).json()["models"]) < 2:
            assert time.monotonic() < deadline, "the gateway never saw both nodes"
            time.sleep(0.1)
        yield Live(url, swarm.token(), swarm.peer_id("node-0"), painter)
    finally:
        swarm.local.stop()


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITINGLIP_")}
    return env | {
        "HOME": str(home),
        "BITINGLIP_HOME": str(home / "bitinglip"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
        "NO_COLOR": "1",
        "TERM": "xterm",
    }


def repl(home: Path, *args: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "node.cli", "repl", *args],
        env=environment(home),
        cwd=str(home),
        encoding="utf-8",
        timeout=15,
        dimensions=(40, 400),
    )


def quit_(child: pexpect.spawn) -> None:
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def ended(child: pexpect.spawn) -> tuple[int, str]:
    child.expect(pexpect.EOF)
    output = str(child.before)
    child.close()
    return int(child.exitstatus), output


def test_answers_stream_and_lines_are_remembered(live: Live, tmp_path: Path) -> None:
    child = repl(tmp_path, "--gateway", live.url, "--token", live.token)
    child.expect_exact(PROMPT)
    # Typed with double spaces, echoed back with single ones: the answer is told from the echo.
    child.sendline(SENTENCE.replace(" ", "  "))
    child.expect_exact("one two")
    first = time.monotonic()
    child.expect_exact("fifteen sixteen")
    assert time.monotonic() - first > 0.3  # fourteen more words at 0.05 s: one by one
    child.expect(r"16 tokens · [0-9.]+ s · [0-9.]+ tokens/s · node (\S{8})")
    assert child.match.group(1) == live.node[-8:]
    child.expect_exact(PROMPT)
    child.send(UP + "\r")  # the previous line, recalled and sent again
    child.expect_exact(SENTENCE)
    child.expect_exact(PROMPT)
    quit_(child)

    history = tmp_path / "bitinglip" / "repl_history"
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    child = repl(tmp_path, "--gateway", live.url, "--token", live.token)
    child.expect_exact(PROMPT)
    child.send(UP + UP + "\r")  # a new session remembers: /quit, then the line before it
    child.expect_exact(SENTENCE)
    child.expect_exact(PROMPT)
    quit_(child)


def test_completion_multiline_settings_and_save(live: Live, tmp_path: Path) -> None:
    child = repl(tmp_path, "--gateway", live.url, "--token", live.token)
    child.expect_exact(PROMPT)
    child.send("/mo\t echo\r")  # /mo completes to /model (the prefix /model and /models share)
    child.expect_exact("now chatting with echo")
    child.send("/model ec\t\r")
    child.expect_exact("now chatting with echo")
    child.sendline("/model nope")
    child.expect_exact("error: unknown model 'nope'; available: echo")
    child.sendline("/set temperature 5")
    child.expect_exact("error: temperature takes a number from 0 to 2, not '5'")
    child.sendline("/set temperature 0.5")
    child.expect_exact("temperature set to 0.5")
    child.sendline("/set")
    child.expect_exact("temperature: 0.5 (set here)")
    child.expect_exact("top_p: the model's default")

    child.sendline("first  line \\")
    child.expect_exact("... ")
    child.sendline("second  line")
    child.expect_exact("first line second line")
    child.expect_exact(PROMPT)
    child.sendline('"""')
    child.sendline("alpha  beta")
    child.sendline('gamma"""')
    child.expect_exact("alpha beta gamma")
    child.expect_exact(PROMPT)
    child.sendline("/save chat.json")
    child.expect_exact("saved 4 messages to chat.json")
    quit_(child)

    saved = json.loads((tmp_path / "chat.json").read_text())
    assert saved["model"] == "echo" and saved["settings"] == {"temperature": 0.5}
    assert saved["messages"] == [
        {"role": "user", "content": "first  line \nsecond  line"},
        {"role": "assistant", "content": "first line second line"},
        {"role": "user", "content": "alpha  beta\ngamma"},
        {"role": "assistant", "content": "alpha beta gamma"},
    ]


def test_ctrl_c_stops_an_answer_and_clears_a_line(live: Live, tmp_path: Path) -> None:
    child = repl(tmp_path, "--gateway", live.url, "--token", live.token)
    child.expect_exact(PROMPT)
    child.sendline("/set max_tokens 1000")
    child.expect_exact(PROMPT)
    started = time.monotonic()
    child.sendline("x  " * 1000)  # fifty seconds of answer
    child.expect_exact("x x x x")
    child.sendintr()
    child.expect_exact("stopped")
    child.expect_exact(PROMPT)
    # Closing the stream reached the node: its call ended long before the answer would have
    # (that the model itself then stops is shown in test_rpc, with a recording runner).
    while live.inflight():
        assert time.monotonic() - started < 25, "the node kept generating"
        time.sleep(0.05)
    child.sendline("still  here")
    child.expect_exact("still here")
    child.expect_exact("tokens/s")
    child.expect_exact(PROMPT)
    child.send("half typed")
    # As a person would, press Ctrl-C once the text is on screen: a Ctrl-C that overtakes the
    # keys before it makes the terminal discard them, and readline then waits for more.
    child.expect_exact("half typed")
    child.sendintr()  # the line is dropped: /quit below is not appended to it
    child.expect_exact(PROMPT)
    quit_(child)


def test_models_peers_usage_and_an_image(live: Live, tmp_path: Path) -> None:
    images = tmp_path / "images"
    args = ["--image-dir", str(images), "--image-size", "64x64"]
    child = repl(tmp_path, "--gateway", live.url, "--token", live.token, *args)
    child.expect_exact(PROMPT)  # echo, not the image model, is the one to chat with
    child.sendline("/peers")
    child.expect_exact("RUN/QUEUE/CAP")
    child.expect_exact(live.node[-8:])
    child.expect_exact(PROMPT)
    child.sendline("/models")
    child.expect(r"echo \*\s+text-generation\s+1/1\s+" + live.node[-8:] + " ready 0/8")
    child.expect_exact(PROMPT)
    child.sendline("/model " + live.painter)
    child.expect_exact(
        f"error: {live.painter!r} makes images, it does not chat (chat models: echo)"
    )
    child.expect_exact(PROMPT)
    child.sendline("/image a red cube")
    child.expect(r"saved (\S+\.png)")
    saved = Path(child.match.group(1))
    assert saved.parent == images
    with Image.open(saved) as picture:
        assert (picture.format, picture.size) == ("PNG", (64, 64))
    child.expect_exact(PROMPT)
    child.sendline("count  me")
    child.expect_exact("count me")
    child.expect_exact(PROMPT)
    child.sendline("/usage")
    child.expect_exact("COMPLETION")
    child.expect_exact("total")
    child.expect_exact(PROMPT)
    child.sendline("/nonsense")
    child.expect_exact("error: unknown command /nonsense: /help lists the commands")
    quit_(child)
    assert "Traceback" not in str(child.before)


def test_a_refused_token_is_a_sentence(live: Live, tmp_path: Path) -> None:
    status, output = ended(repl(tmp_path, "--gateway", live.url, "--token", "not-a-token"))
    assert status == 1
    assert "error: your token was refused (" in output
    assert "log in again with `bitinglip login`" in output
    assert "Traceback" not in output


def test_an_unreachable_gateway_is_a_sentence(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    status, output = ended(repl(tmp_path, "--gateway", url, "--token", "t"))
    assert status == 1
    assert f"error: cannot reach the gateway at {url}: is `bitinglip up` running?" in output
    assert "Traceback" not in output


def test_login_saves_what_the_repl_starts_from(live: Live, tmp_path: Path) -> None:
    def login(*args: str, password: str = "") -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "node.cli", "login", *args]
        env = environment(tmp_path)
        return subprocess.run(
            command, env=env, input=password, capture_output=True, text=True, timeout=30
        )

    credentials = tmp_path / "bitinglip" / "credentials.json"
    refused = login("--gateway", live.url, "--token", "not-a-token")
    assert refused.returncode == 1 and "your token was refused" in refused.stderr
    assert not credentials.exists()

    done = login("--gateway", live.url, "--token", live.token)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"logged in to {live.url}")
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert json.loads(credentials.read_text())["token"] == live.token

    child = repl(tmp_path)  # no flags: the saved gateway and token
    child.expect_exact(PROMPT)
    child.sendline("hi  there")
    child.expect_exact("hi there")
    quit_(child)

    account = {"username": "repl-user", "password": "correct horse battery"}
    assert httpx.post(f"{live.url}/v1/auth/register", json=account).status_code == 201
    who = ("--gateway", live.url, "--username", "repl-user", "--password-stdin")
    wrong = login(*who, password="wrong horse\n")
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("error: the gateway refused that username and password (")
    done = login(*who, password="correct horse battery\n")
    assert done.returncode == 0, done.stderr
    saved = json.loads(credentials.read_text())
    assert saved["username"] == "repl-user" and saved["token"] != live.token
    child = repl(tmp_path)
    child.expect_exact(PROMPT)
    child.sendline("/usage")  # the new user has chatted with no one yet
    child.expect_exact("no usage yet")
    quit_(child)
