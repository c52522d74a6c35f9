"""A real gateway and an echo node, loaded from threads with plain and streamed calls: the
gateway is SIGKILLed mid-load, and every call that was answered is in its database."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx

from gateway.accounts.database import Store
from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_swarm import wait_nodes
from tests.unit.gateway.accounts.test_accounts import bearer

# --- a real gateway, killed mid-load ------------------------------------------------------


def test_every_answered_call_survives_sigkill(swarm: LocalSwarmFixture, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[gateway.plans.default]\nrequests_per_minute = 100000\nconcurrent = 100\n")
    swarm.start_gateway(config=config)
    swarm.start_node("node-0", [swarm.addr("gateway")], ["echo"])
    swarm.wait_ready(["node-0"])
    url = swarm.url()
    wait_nodes(url, 1)
    # The gateway holds the token key: a user can sign up and make a key on their own.
    login = {"username": "carol", "password": "a long password"}
    session = httpx.post(f"{url}/v1/auth/register", json=login).json()["token"]
    key = httpx.post(f"{url}/v1/keys", json={"name": "k"}, headers=bearer(session)).json()
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, headers=bearer(key["key"]))
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-ratelimit-limit"] == "100000"

    answered: dict[str, list[int]] = defaultdict(list)
    stop = threading.Event()

    def load(user: str, streamed: bool) -> None:
        token = swarm.token(user)
        with httpx.Client(timeout=10) as client:
            for words in range(1, 200):  # each call's length names it: completion_tokens
                if stop.is_set():
                    return
                body = {
                    "model": "echo",
                    "messages": [{"role": "user", "content": "w " * words}],
                    "stream": streamed,
                }
                try:
                    with client.stream(
                        "POST", f"{url}/v1/chat/completions", json=body, headers=bearer(token)
                    ) as response:
                        # A streamed call is answered once its client has read [DONE].
                        text = "".join(response.iter_text())
                except httpx.HTTPError:
                    return  # the gateway is gone
                if response.status_code == 200 and (not streamed or "data: [DONE]" in text):
                    answered[user].append(words)

    # Half the users stream: their rows must be on disk before [DONE], like the others'.
    threads = [threading.Thread(target=load, args=(f"user-{i}", i % 2 == 1)) for i in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while sum(map(len, answered.values())) < 80 and time.monotonic() < deadline:
        time.sleep(0.01)
    swarm.kill("gateway")  # SIGKILL, calls in flight
    stop.set()
    for thread in threads:
        thread.join(15)
    assert sum(map(len, answered.values())) >= 80

    with Store.open(swarm.data_dir / "peers" / "gateway") as store:
        rows = store.usage_records()
    stored: dict[str, set[int]] = defaultdict(set)
    for row in rows:
        if row.status == 200:
            stored[row.user].add(row.completion_tokens)
    for user, calls in answered.items():
        missing = sorted(set(calls) - stored[user])
        assert not missing, f"{user}: answered but not stored: {missing}"
    assert [r.key_id for r in rows if r.user == "carol"] == [key["id"]]
