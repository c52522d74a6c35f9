"""A node across a long, lossy link: 100 ms round trip, jitter, 1% loss.

Three machines in network namespaces: a gateway and a near node on one LAN, and a far
node on a link of its own whose only way to the gateway is ``slow_link``, a relay in the
root namespace that delays every chunk 50 ms each way (± 5 ms) and loses 1%. The gateway
measures the far node's round trip and, both nodes idle, routes to the near one; calls to
the far node stream word by word; when the near node dies, calls fail over to the far one.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import LocalSwarmFixture
from tests.integration.netns import Lan, lan, unavailable
from tests.integration.test_lan import EVERYWHERE, public_url
from tests.integration.test_openai_e2e import wait_models

WHY = unavailable()
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")

ONE_WAY_S = 0.05
WORDS = " ".join(f"w{i}" for i in range(30))


@pytest.fixture
def net() -> Iterator[Lan]:
    with lan() as made:
        yield made


def peers(url: str, token: str) -> dict[str, dict[str, Any]]:
    reply = httpx.get(f"{url}/v1/peers", headers={"Authorization": f"Bearer {token}"})
    return {p["peer_id"]: p for p in reply.json()["data"]}


def stream(client: openai.OpenAI, model: str = "echo") -> tuple[str, list[float]]:
    """A streamed echo of ``WORDS``: its text and when each piece arrived."""
    started = time.monotonic()
    pieces: list[str] = []
    times: list[float] = []
    chunks = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": WORDS}], stream=True
    )
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
            times.append(time.monotonic() - started)
    return "".join(pieces), times


def calls_on(call: Callable[[], str], url: str, token: str) -> set[str]:
    """The nodes that had a call in flight while ``call`` ran (it must echo ``WORDS``)."""
    busy: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            busy.update(
                p for p, e in peers(url, token).items() if (e.get("load") or {}).get("inflight")
            )
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert call().split() == WORDS.split()
    finally:
        done.set()
        watcher.join()
    return busy


def test_calls_stream_and_fail_over_across_a_slow_lossy_link_and_near_nodes_win(
    swarm: LocalSwarmFixture, net: Lan
) -> None:
    gateway_ip = net.add("gw")
    net.add("near")
    far_ip, root_side = net.isolated("far", f"10.{net.subnet.split('.')[1]}.250")
    link: subprocess.Popen[bytes] | None = None
    try:
        swarm.start_gateway(
            listen=EVERYWHERE, wrap=net.run_in("gw"), env={"BITINGLIP_GATEWAY_HOST": "0.0.0.0"}
        )
        gateway_addr = swarm.addr("gateway")
        port = gateway_addr.split("/tcp/")[1].split("/")[0]
        gateway_id = swarm.peer_id("gateway")
        link = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.slow_link",
                f"{root_side}:{port}",
                f"{gateway_ip}:{port}",
                "--delay",
                str(ONE_WAY_S),
                "--jitter",
                "0.005",
                "--loss",
                "0.01",
            ],
            stdout=subprocess.PIPE,
        )
        assert link.stdout is not None and link.stdout.readline().strip() == b"ready"
        delay = ["--echo-delay", "0.05"]
        swarm.start_node(
            "near",
            [f"/ip4/{gateway_ip}/tcp/{port}/p2p/{gateway_id}"],
            ["echo"],
            delay,
            listen=EVERYWHERE,
            wrap=net.run_in("near"),
        )
        swarm.start_node(
            "far",
            [f"/ip4/{root_side}/tcp/{port}/p2p/{gateway_id}"],
            ["echo"],
            delay,
            listen=f"/ip4/{far_ip}/tcp/0",
            wrap=net.run_in("far"),
        )
        swarm.wait_ready(["near", "far"])
        url = public_url(swarm, gateway_ip)
        token = swarm.token()
        near, far = swarm.peer_id("near"), swarm.peer_id("far")
        deadline = time.monotonic() + 60
        while not {near, far} <= {p for p, e in peers(url, token).items() if e["healthy"]}:
            assert time.monotonic() < deadline, "the gateway does not route to both nodes"
            time.sleep(0.2)
        wait_models(url, token, {"echo"})
        seen = peers(url, token)
        assert seen[far]["rtt_ms"] >= 2 * ONE_WAY_S * 1000 * 0.9, seen[far]
        assert seen[near]["rtt_ms"] < 2 * ONE_WAY_S * 1000 / 2, seen[near]

        client = openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=60)
        # Both idle: every call goes to the near node (its load shows the call in flight).
        for _ in range(3):
            busy = calls_on(lambda: stream(client)[0], url, token)
            assert busy == {near}, busy

        swarm.kill("near")
        text, times = stream(client)  # the near node is gone: the far one answers
        assert text.split() == WORDS.split()
        assert len(times) >= 10 and times[-1] - times[0] > 0.5, times  # word by word
    finally:
        swarm.local.stop()
        if link is not None:
            link.kill()
            link.wait()
