"""Real gateways and echo nodes: a burst past the swarm's capacity waits its turn instead of
failing, a streamed call hears its place, a client's X-Max-Wait is honoured, one user's
burst does not hold another user back, and two gateways do not promise a node's slots
twice."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path

import httpx

from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_swarm import wait_nodes
from tests.unit.gateway.api.test_metrics import parse, value

WORD = 0.1  # seconds an echo node takes per word, in the tests below


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


def test_one_users_burst_does_not_hold_back_another_users_call(
    swarm: LocalSwarmFixture, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.toml"  # a plan that lets one user send the whole burst
    config.write_text(
        "[gateway.plans.default]\nrequests_per_minute = 600\ntokens_per_day = 200000\n"
        "images_per_day = 100\nconcurrent = 16\n"
    )
    gateway = swarm.start_gateway(config=config)
    boot = [str(gateway["addrs"][0])]  # type: ignore[index]
    extra = ["--echo-delay", str(WORD), "--capacity", "1", "--max-queue", "1"]
    swarm.start_node("node-0", boot, ["echo"], extra)
    swarm.wait_ready(["node-0"])
    url = swarm.url()
    greedy, modest = swarm.token("greedy"), swarm.token("modest")
    wait_nodes(url, 1)
    service = 5 * WORD  # a call of five words holds the one slot this long

    with concurrent.futures.ThreadPoolExecutor(9) as pool:
        burst = [pool.submit(call, url, greedy, 5) for _ in range(8)]
        time.sleep(2 * service)  # the burst is in: two on the node, six waiting
        single = call(url, modest, 5)
        replies = [f.result() for f in burst]
    assert single.status_code == 200 and all(r.status_code == 200 for r in replies)
    # Round-robin between users: the single call goes next, as soon as one of the burst's
    # calls ends, instead of behind the six still waiting.
    waited = float(single.headers["x-queue-wait"])
    longest = max(float(r.headers["x-queue-wait"]) for r in replies)
    assert waited <= service + 0.3, (waited, longest)
    assert longest > 4 * service


def test_two_gateways_sharing_a_node_do_not_oversubscribe_it(swarm: LocalSwarmFixture) -> None:
    # Each gateway may fill free slots only (node_queue 0); the node would queue 32 calls,
    # so only the gateways' own accounting keeps its queue short.
    no_queue = {"BITINGLIP_GATEWAY_NODE_QUEUE": "0"}
    first = swarm.start_gateway(env=no_queue)
    boot = [str(first["addrs"][0])]  # type: ignore[index]
    swarm.start_gateway("gateway-2", boot, env=no_queue)
    extra = ["--echo-delay", str(WORD), "--capacity", "2", "--max-queue", "32"]
    swarm.start_node("node-0", boot, ["echo"], [*extra, "--metrics-port", "0"])
    swarm.wait_ready(["node-0"])
    urls = [swarm.url(), swarm.url("gateway-2")]
    # Six users a gateway, two calls each: within the default plan's four at once.
    names = ["gateway", "gateway-2"]
    tokens = [[swarm.token(f"user-{u}", gateway=g) for u in range(6)] for g in names]
    for url in urls:
        wait_nodes(url, 1)
    metrics = str(swarm.local.status("node-0")["metrics_url"])

    seen: list[tuple[float, float]] = []  # the node's (inflight, queued), sampled
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples = parse(httpx.get(metrics, timeout=5).text)
            seen.append(
                (value(samples, "bitinglip_node_inflight"), value(samples, "bitinglip_node_queued"))
            )
            time.sleep(0.02)

    with concurrent.futures.ThreadPoolExecutor(25) as pool:
        sampler = pool.submit(sample)
        replies = [pool.submit(call, urls[i % 2], tokens[i % 2][i // 2 % 6], 3) for i in range(24)]
        results = [f.result() for f in replies]
        done.set()
        sampler.result()
    assert [r.status_code for r in results] == [200] * 24, [r.text for r in results]
    assert max(inflight for inflight, _ in seen) == 2  # it was kept busy
    # Between two load updates both gateways may take the same freed slot: at most one
    # call each waits on the node, never the burst.
    assert max(queued for _, queued in seen) <= 2, seen
