"""The operator's CLI reaches a running gateway: ``bitinglip users disable|enable`` and
``bitinglip tokens revoke``, run as processes on the swarm's data directory while a
gateway process serves, take effect on the user's or key's next request.

The README says a running gateway sees such changes within a second; these tests wait
up to ten and record how long it took (a JUnit property, also printed: ``-rP`` shows
it), so a slow machine does not fail them, while a gateway that never sees the change
does.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_openai_e2e import wait_models

BITINGLIP = str(Path(sys.executable).with_name("bitinglip"))
DEADLINE = 10.0


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSwarmFixture]:
    s = LocalSwarmFixture(tmp_path_factory.mktemp("operator") / "swarm")
    try:
        s.start_gateway()
        s.start_node("node-0", [s.addr("gateway")], ["echo"])
        s.wait_ready(["node-0"])
        wait_models(s.url(), s.token(), {"echo"})
        yield s
    finally:
        s.local.stop()


def cli(swarm: LocalSwarmFixture, *args: str) -> str:
    """Run ``bitinglip ARGS --data-dir <the swarm's data dir>``; its output."""
    done = subprocess.run(
        [BITINGLIP, *args, "--data-dir", str(swarm.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def chat(swarm: LocalSwarmFixture, token: str) -> httpx.Response:
    body = {"model": "echo", "messages": [{"role": "user", "content": "still me"}]}
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.post(f"{swarm.url()}/v1/chat/completions", json=body, headers=headers, timeout=30)


def seconds_until(
    answered: Callable[[httpx.Response], bool], call: Callable[[], httpx.Response]
) -> float:
    """Repeat ``call`` until its answer satisfies ``answered``; the seconds that took."""
    start = time.monotonic()
    while True:
        response = call()
        if answered(response):
            return time.monotonic() - start
        assert time.monotonic() - start < DEADLINE, (
            f"still {response.status_code} after {DEADLINE:.0f} s: {response.text}"
        )
        time.sleep(0.1)


def report(record_property: Callable[[str, object], None], name: str, seconds: float) -> None:
    record_property(name, round(seconds, 2))
    print(f"{name}: {seconds:.2f}")


def refused(message: str) -> Callable[[httpx.Response], bool]:
    def check(response: httpx.Response) -> bool:
        if response.status_code == 200:
            return False
        assert response.status_code == 401, response.text
        error = response.json()["error"]
        assert (error["code"], error["message"]) == ("invalid_api_key", message)
        return True

    return check


def served(response: httpx.Response) -> bool:
    if response.status_code == 401:
        return False
    assert response.status_code == 200, response.text
    return True


def test_disable_and_enable_a_user(
    live: LocalSwarmFixture, record_property: Callable[[str, object], None]
) -> None:
    assert "added user alice" in cli(live, "users", "add", "alice")
    alice = live.token("alice")
    assert chat(live, alice).status_code == 200

    assert cli(live, "users", "disable", "alice").strip() == "disabled user alice"
    took = seconds_until(refused("user 'alice' is disabled"), lambda: chat(live, alice))
    report(record_property, "seconds_until_disabled", took)
    assert chat(live, live.token("bob")).status_code == 200  # nobody else is refused

    assert cli(live, "users", "enable", "alice").strip() == "enabled user alice"
    took = seconds_until(served, lambda: chat(live, alice))
    report(record_property, "seconds_until_enabled", took)


def test_revoke_an_api_key(
    live: LocalSwarmFixture, record_property: Callable[[str, object], None]
) -> None:
    url = live.url()
    account = {"username": "carol", "password": "a long password"}
    registered = httpx.post(f"{url}/v1/auth/register", json=account, timeout=30)
    assert registered.status_code == 201, registered.text
    session = registered.json()["token"]
    made = httpx.post(
        f"{url}/v1/keys",
        json={"name": "laptop"},
        headers={"Authorization": f"Bearer {session}"},
        timeout=30,
    )
    assert made.status_code == 201, made.text
    key_id, key = made.json()["id"], made.json()["key"]
    assert chat(live, key).status_code == 200

    listed = cli(live, "tokens", "list", "--user", "carol", "--json")
    assert key_id in listed
    assert cli(live, "tokens", "revoke", key_id).strip() == (
        f"revoked key 'laptop' of carol ({key_id})"
    )
    took = seconds_until(refused("token has been revoked"), lambda: chat(live, key))
    report(record_property, "seconds_until_revoked", took)
    assert chat(live, session).status_code == 200  # her login still works
