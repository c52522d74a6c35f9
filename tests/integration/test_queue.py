"""Real gateway and echo nodes: a burst past the swarm's capacity waits its turn instead of
failing, a streamed call hears its place, and a client's X-Max-Wait is honoured."""

from __future__ import annotations

import concurrent.futures

import httpx

from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_swarm import wait_nodes


def call(url: str, token: str, words: int, **headers: str) -> httpx.Response:
    body = {"model": "echo", "messages": [{"role": "user", "content": "w " * words}]}
    auth = {"Authorization": f"Bearer {token}"} | headers
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=auth, timeout=60)


def test_a_burst_past_capacity_waits_and_all_of_it_succeeds(swarm: LocalSwarmFixture) -> None:
    gateway = swarm.start_gateway()
    boot = [str(gateway["addrs"][0])]  # type: ignore[index]
    extra = ["--echo-delay", "0.05", "--capacity", "1", "--max-queue", "1"]
    swarm.start_node("node-0", boot, ["echo"], extra)
    swarm.wait_ready(["node-0"])
    url = swarm.url()
    tokens = [swarm.token(f"user-{i}") for i in range(3)]
    wait_nodes(url, 1)

    # Nine calls of ~0.5 s from three users on one slot (and one place in the node's
    # queue): six must wait in the gateway's queue, and none fails.
    with concurrent.futures.ThreadPoolExecutor(9) as pool:
        replies = list(pool.map(lambda i: call(url, tokens[i % 3], 10), range(9)))
    assert [r.status_code for r in replies] == [200] * 9, [r.text for r in replies]
    waits = sorted(float(r.headers["x-queue-wait"]) for r in replies)
    assert waits[-1] > 1.0  # the last ones waited for several calls ahead of them

    # A client that will not wait as long as the queue needs is told at once, with when
    # to come back; a streamed call that waits hears its place as SSE comments.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        busy = [pool.submit(call, url, tokens[i % 3], 20) for i in range(3)]
        body = {"model": "echo", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        auth = {"Authorization": f"Bearer {tokens[0]}"}
        refused = call(url, tokens[1], 1, **{"X-Max-Wait": "0.01"})
        while refused.status_code == 200:  # until the burst has filled the node
            refused = call(url, tokens[1], 1, **{"X-Max-Wait": "0.01"})
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", json=body, headers=auth, timeout=60
        ) as response:
            assert response.status_code == 200
            lines = list(response.iter_lines())
        assert all(f.result().status_code == 200 for f in busy)
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert any(line.startswith(": queued, position") for line in lines), lines
    assert any(line.startswith(": dispatched, waited") for line in lines)
    assert [line for line in lines if line][-1] == "data: [DONE]"
