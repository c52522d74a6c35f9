"""A node behind a NAT, reached through a circuit relay by a gateway it never dialled.

What is emulated, with network namespaces and no packet filter (this kernel has neither
iptables nor nftables): two gateways on a LAN, the public side; a ``home`` machine on a
link of its own to the root namespace, the router. Nothing on the LAN has a route to
home, so nothing can open a connection to it. Home's only way out is a user-space TCP
forwarder in the router (``slow_link`` with no delay) that opens its own connection to
the first gateway: the gateway sees the router's address and an ephemeral port, as
behind a NAT. Home cannot reach the second gateway at all.

The node is ``reachability = "auto"``: the first gateway (a relay by default) cannot dial
it back, as it comes from the router's address, so it takes a slot there and advertises
only its circuit address. The second gateway finds it in the
DHT, connects through the relay, and streams a chat call over the relayed connection.
DCUtR is then tried, and fails, as it must here: the forwarder carries whole TCP streams
to one place, so no packet from the second gateway can ever reach home (a hole punch
needs a NAT that maps home's own outgoing packets). The test shows the attempt, and that
calls keep streaming through the relay after it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.integration.conftest import LocalSwarmFixture
from tests.integration.netns import Lan, lan, unavailable
from tests.integration.test_lan import EVERYWHERE, public_url
from tests.integration.test_wan import WORDS, peers, stream

ROOT = Path(__file__).resolve().parent.parent.parent
WHY = unavailable()
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")

HTTP_EVERYWHERE = {"BITINGLIP_GATEWAY_HOST": "0.0.0.0"}


@pytest.fixture
def net() -> Iterator[Lan]:
    with lan() as made:
        yield made


def wait_log(path: Path, text: str, timeout: float = 60) -> str:
    """The first line of the log at ``path`` that holds ``text``, once it is written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        found = [line for line in lines if text in line]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"{path.name} never said {text!r}")


def first_stream(
    client: openai.OpenAI, model: str = "echo", timeout: float = 90
) -> tuple[str, list[float]]:
    """``stream``, again while no node serves the model yet (503) or the call fails."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return stream(client, model)
        except openai.APIError as exc:
            assert time.monotonic() < deadline, f"no node answered: {exc}"
            time.sleep(1)


def reaches(net: Lan, machine: str, ip: str, port: str) -> bool:
    """Whether ``machine`` can open a TCP connection to ``ip:port``."""
    probe = f"import socket; socket.create_connection(({ip!r}, {port}), timeout=3).close()"
    command = [*net.run_in(machine), sys.executable, "-c", probe]
    return subprocess.run(command, capture_output=True, timeout=30).returncode == 0


def test_a_node_behind_a_nat_answers_a_gateway_it_never_dialled_through_the_relay(
    swarm: LocalSwarmFixture, net: Lan
) -> None:
    relay_ip = net.add("gw1")
    other_ip = net.add("gw2")
    home_ip, router_ip = net.isolated("home", f"10.{net.subnet.split('.')[1]}.250")
    forwarder: subprocess.Popen[bytes] | None = None
    try:
        swarm.start_gateway("gw1", listen=EVERYWHERE, wrap=net.run_in("gw1"), env=HTTP_EVERYWHERE)
        port = swarm.addr("gw1").split("/tcp/")[1].split("/")[0]
        relay = swarm.peer_id("gw1")
        swarm.start_gateway(
            "gw2",
            [f"/ip4/{relay_ip}/tcp/{port}/p2p/{relay}"],
            listen=EVERYWHERE,
            wrap=net.run_in("gw2"),
            env=HTTP_EVERYWHERE,
        )
        router = [f"{router_ip}:{port}", f"{relay_ip}:{port}", "--delay", "0"]
        forwarder = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.slow_link", *router], stdout=subprocess.PIPE
        )
        assert forwarder.stdout is not None and forwarder.stdout.readline().strip() == b"ready"
        swarm.start_node(
            "home",
            [f"/ip4/{router_ip}/tcp/{port}/p2p/{relay}"],
            ["echo"],
            ["--echo-delay", "0.05"],
            listen=f"/ip4/{home_ip}/tcp/0",
            wrap=net.run_in("home"),
            env={"BITINGLIP_NODE_REACHABILITY": "auto"},
        )
        swarm.wait_ready(["home"])
        home = swarm.peer_id("home")
        home_port = swarm.addr("home").split("/tcp/")[1].split("/")[0]
        assert not reaches(net, "gw2", home_ip, home_port)  # the NAT: nobody dials in
        assert reaches(net, "home", router_ip, port)  # home dials out through the router
        circuit = f"/p2p/{relay}/p2p-circuit/p2p/{home}"

        url = public_url(swarm, other_ip, "gw2")
        token = swarm.token(gateway="gw2")
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=60)
        # gw2 has not met the node: the first call's provider lookup finds it (and its
        # circuit), the relay carries the connection.
        text, times = first_stream(client)
        assert text.split() == WORDS.split()
        assert len(times) >= 10 and times[-1] - times[0] > 0.5, times  # word by word
        admin = swarm.token("admin", scope="admin", gateway="gw2")
        seen = peers(url, admin)[home]
        assert seen["healthy"] and seen["addrs"] == [circuit], seen  # its circuit, only
        assert seen["relayed"] is True, seen

        logs = swarm.data_dir / "logs"
        wait_log(logs / "home.log", "no relay can dial us back: private")
        # gw2 reached the node through gw1, never directly (it has no route to it) ...
        assert relay[-8:] in wait_log(logs / "gw2.log", f"connected to {home[-8:]} through")
        # ... tried DCUtR, which cannot succeed here, and calls keep to the relay.
        wait_log(logs / "gw2.log", f"no direct connection to {home[-8:]}", timeout=120)
        text, times = stream(client)
        assert text.split() == WORDS.split()
        assert len(times) >= 10 and times[-1] - times[0] > 0.5, times
        assert peers(url, admin)[home]["relayed"] is True

        # The operator's CLI, on a LAN machine with no route to home, loads a model there:
        # it finds the node among those reached through relays, and calls it through one.
        load = [*net.run_in("gw2"), sys.executable, "-m", "node.cli", "node", "load", "echo-b"]
        load += ["--peer", home[-6:], "--json", "--data-dir", str(swarm.data_dir)]
        load += ["--bootstrap", f"/ip4/{relay_ip}/tcp/{port}/p2p/{relay}"]
        done = subprocess.run(load, capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["peer"] == home
        text, _ = first_stream(client, model="echo-b")
        assert text.split() == WORDS.split()
    finally:
        swarm.local.stop()
        if forwarder is not None:
            forwarder.kill()
            forwarder.wait()
