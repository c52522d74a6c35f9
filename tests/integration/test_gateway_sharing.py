"""Two real gateways of one accounts database (``database_dir``) share one user's limit
and revocations: the limiter's minute lives in each process, so it is the events they
stream each other that hold it."""

from __future__ import annotations

import time

import httpx

from tests.integration.conftest import LocalSwarmFixture


def wait_for(check: object, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def start(swarm: LocalSwarmFixture) -> tuple[str, str]:
    shared = {"BITINGLIP_GATEWAY_DATABASE_DIR": str(swarm.data_dir / "accounts")}
    a = swarm.start_gateway("gw-a", env=shared)
    boot = str(a["addrs"][0])  # type: ignore[index]
    swarm.start_gateway("gw-b", bootstrap=[boot], env=shared)
    swarm.start_node("node-0", [boot], ["echo"], ["--capacity", "8"])
    swarm.wait_ready(["node-0"])
    urls = swarm.url("gw-a"), swarm.url("gw-b")
    for url in urls:
        wait_for(lambda u=url: httpx.get(f"{u}/health").json()["models"] == ["echo"], what="a node")
    # Each gateway subscribes to the other's events once they find each other.
    for name in ("gw-a", "gw-b"):
        log = swarm.data_dir / "logs" / f"{name}.log"
        wait_for(lambda p=log: "sharing usage with gateway" in p.read_text(), what="peering")
    return urls


def chat(url: str, token: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {token}"},
        json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )


def test_limit_holds_across_gateways_and_revocation_spreads(swarm: LocalSwarmFixture) -> None:
    url_a, url_b = start(swarm)
    token = swarm.token("spreader", gateway="gw-a")

    # The default plan allows 60 requests a minute; spread 100 over both gateways.
    statuses = [chat((url_a, url_b)[i % 2], token).status_code for i in range(100)]
    accepted = statuses.count(200)
    assert 60 <= accepted <= 66, statuses
    assert set(statuses) == {200, 429}
    refused = chat(url_b, token)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-remaining"] == "0"

    # A key made and revoked on one gateway is refused on the other within seconds.
    account = httpx.post(
        f"{url_a}/v1/auth/register", json={"username": "carol", "password": "correct horse"}
    ).json()
    session = {"Authorization": f"Bearer {account['token']}"}
    key = httpx.post(f"{url_a}/v1/keys", json={"name": "laptop"}, headers=session).json()
    assert chat(url_b, key["key"]).status_code == 200
    revoked = httpx.delete(f"{url_a}/v1/keys/{key['id']}", headers=session)
    assert revoked.status_code == 200
    assert chat(url_a, key["key"]).status_code == 401
    wait_for(lambda: chat(url_b, key["key"]).status_code == 401, timeout=30, what="revocation")
