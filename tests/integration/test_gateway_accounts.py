"""Two real gateways, each with its own users: one identity per user. Both hold the swarm's
token key, yet neither accepts the other's tokens, and two people called ``alice``, one on
each, have a quota each."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_gateway_sharing import chat, wait_for

PASSWORD = "correct horse battery"


def register(url: str, user: str) -> str:
    account = {"username": user, "password": PASSWORD}
    response = httpx.post(f"{url}/v1/auth/register", json=account, timeout=30)
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def refused_elsewhere(url: str, token: str) -> str:
    """The 401 ``url`` answers ``token`` with; its message."""
    response = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    return str(error["message"])


def test_each_gateway_knows_its_own_users(swarm: LocalSwarmFixture, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[gateway.plans.default]\nrequests_per_minute = 3\n")
    a = swarm.start_gateway("gw-a", config=config)
    boot = str(a["addrs"][0])  # type: ignore[index]
    swarm.start_gateway("gw-b", bootstrap=[boot], config=config)
    swarm.start_node("node-0", [boot], ["echo"])
    swarm.wait_ready(["node-0"])
    url_a, url_b = swarm.url("gw-a"), swarm.url("gw-b")
    for url in (url_a, url_b):
        wait_for(lambda u=url: httpx.get(f"{u}/health").json()["models"] == ["echo"], what="node")
    # They find each other (and each declines to share the other's usage).
    for name in ("gw-a", "gw-b"):
        log = swarm.data_dir / "logs" / f"{name}.log"
        wait_for(lambda p=log: _met(p.read_text()), what="the gateways meet")

    # Mallory registers "alice" on B: B's token for her is no key to A's alice.
    mallory = register(url_b, "alice")
    message = refused_elsewhere(url_a, mallory)
    assert message == (
        "token belongs to another gateway's accounts (wrong audience):"
        " sign in to this gateway for a token it accepts"
    )
    key = httpx.post(
        f"{url_b}/v1/keys", json={"name": "k"}, headers={"Authorization": f"Bearer {mallory}"}
    ).json()["key"]
    assert "wrong audience" in refused_elsewhere(url_a, key)
    # Nor is an operator's token for A good on B, and its user's name is taken on A.
    operator = swarm.token("ops-bot", gateway="gw-a")
    assert "wrong audience" in refused_elsewhere(url_b, operator)
    taken = httpx.post(
        f"{url_a}/v1/auth/register", json={"username": "ops-bot", "password": PASSWORD}
    )
    assert taken.status_code == 409, taken.text

    # The real alice on A uses up her quota; mallory's on B is her own.
    alice = register(url_a, "alice")
    assert [chat(url_a, alice).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert chat(url_b, mallory).status_code == 200


def _met(log: str) -> bool:
    return "has other accounts" in log or "sharing usage with gateway" in log
