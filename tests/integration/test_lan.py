"""Zero configuration on a LAN: a node and a gateway started with no bootstrap address, each
in a network namespace of its own on one bridge (two machines on one segment), find each
other by mDNS and serve a call; a node of another swarm on the same segment is not let in.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.conftest import LocalSwarmFixture
from tests.integration.netns import Lan, lan, unavailable
from tests.integration.test_openai_e2e import wait_models

WHY = unavailable()
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")

EVERYWHERE = "/ip4/0.0.0.0/tcp/0"


@pytest.fixture
def net() -> Iterator[Lan]:
    with lan() as made:
        yield made


def public_url(swarm: LocalSwarmFixture, address: str, name: str = "gateway") -> str:
    """The gateway's URL as another machine of the LAN reaches it."""
    port = swarm.url(name).rsplit(":", 1)[1]
    return f"http://{address}:{port}"


def test_node_and_gateway_with_no_bootstrap_find_each_other_by_mdns(
    swarm: LocalSwarmFixture, net: Lan, tmp_path: Path
) -> None:
    gateway_ip = net.add("gw")
    net.add("node")
    net.add("stranger")
    other = LocalSwarmFixture(tmp_path / "other")
    try:
        swarm.start_gateway(
            listen=EVERYWHERE, wrap=net.run_in("gw"), env={"BITINGLIP_GATEWAY_HOST": "0.0.0.0"}
        )
        swarm.start_node("node", [], ["echo"], listen=EVERYWHERE, wrap=net.run_in("node"))
        # A node of another operator on the same segment: other service type, no certificate.
        other.local.spawn(
            "intruder", "node", ["--model", "echo-intruder"], listen=EVERYWHERE,
            wrap=net.run_in("stranger"),
        )  # fmt: skip
        swarm.wait_ready(["node"])
        other.wait_ready(["intruder"])
        url = public_url(swarm, gateway_ip)
        token = swarm.token()
        wait_models(url, token, {"echo"}, timeout=60)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=30)
        chunks = client.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "hello over the lan"}],
            stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "hello over the lan" in text
        time.sleep(2)  # time enough to have heard the intruder, had it used our service type
        peers = httpx.get(f"{url}/v1/peers", headers={"Authorization": f"Bearer {token}"})
        assert other.peer_id("intruder") not in {p["peer_id"] for p in peers.json()["data"]}
    finally:
        swarm.local.stop()
        other.local.stop()
