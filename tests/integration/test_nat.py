"""A node behind a NAT, reached through a circuit relay, and upgraded off it where it can be.

With network namespaces and no netfilter (this kernel has neither iptables nor nftables),
two NATs are emulated, each faithful to one side of a real one:

* A NAT that translates, and lets nothing through unasked. Two gateways on a LAN, the
  public side; a ``home`` machine on a link of its own to the root namespace, the router.
  Nothing on the LAN has a route to home, so nothing can open a connection to it. Home's
  only way out is a user-space TCP forwarder in the router (``slow_link`` with no delay)
  that opens its own connection to the first gateway: the gateway sees the router's
  address and an ephemeral port. Home cannot reach the second gateway at all. No hole can
  be punched here: the forwarder carries whole TCP streams to one place, never home's own
  packets, so DCUtR is tried and fails, and calls stay on the relay.
* A NAT's filtering, in the kernel: home behind a router machine that forwards its
  packets both ways but drops every TCP connection attempt on its way in (``syn_filter``,
  an eBPF program on the router's inside interface). Home dials out freely, nobody dials
  in; its own address is routed, as behind a NAT that keeps ports. Here DCUtR leaves a
  direct connection, opened from inside.

The node is ``reachability = "auto"``: the relay cannot dial it back, so it takes a slot
there and advertises only its circuit address.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

import keys
from tests.integration.conftest import LocalSwarmFixture
from tests.integration.netns import Lan, lan, unavailable
from tests.integration.syn_filter import attach
from tests.integration.syn_filter import unavailable as no_filter
from tests.integration.test_lan import EVERYWHERE, public_url
from tests.integration.test_wan import WORDS, peers, stream

ROOT = Path(__file__).resolve().parent.parent.parent
WHY = unavailable()
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")
NO_FILTER = no_filter() if WHY is None else None

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


def start_home(
    swarm: LocalSwarmFixture, net: Lan, ip: str, bootstrap: str, extra: list[str] | None = None
) -> tuple[str, str]:
    """The echo node behind the NAT, in namespace ``home`` at ``ip``, finding out whether
    it is reachable (``auto``): its peer id and TCP port."""
    swarm.start_node(
        "home",
        [bootstrap],
        ["echo"],
        extra,
        listen=f"/ip4/{ip}/tcp/0",
        wrap=net.run_in("home"),
        env={"BITINGLIP_NODE_REACHABILITY": "auto"},
    )
    swarm.wait_ready(["home"])
    return swarm.peer_id("home"), swarm.addr("home").split("/tcp/")[1].split("/")[0]


def reaches(net: Lan, machine: str, ip: str, port: str) -> bool:
    """Whether ``machine`` can open a TCP connection to ``ip:port``."""
    probe = f"import socket; socket.create_connection(({ip!r}, {port}), timeout=3).close()"
    command = [*net.run_in(machine), sys.executable, "-c", probe]
    return subprocess.run(command, capture_output=True, timeout=30).returncode == 0


def test_a_node_behind_a_nat_answers_a_gateway_it_never_dialled_through_the_relay(
    swarm: LocalSwarmFixture, net: Lan, record_property: Callable[[str, object], None]
) -> None:
    """Behind the translating NAT: the second gateway (no route to home) finds the node,
    streams calls through the first gateway's relay, and keeps doing so after DCUtR fails;
    the operator's CLI there loads a model on it the same way."""
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
        bootstrap = f"/ip4/{router_ip}/tcp/{port}/p2p/{relay}"
        home, home_port = start_home(swarm, net, home_ip, bootstrap, ["--echo-delay", "0.05"])
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
        # The round trip of the node's load updates, relayed (-rP shows it).
        record_property("relayed_rtt_ms", seen["rtt_ms"])
        print(f"gw2 to the node through the relay: {seen['rtt_ms']} ms round trip")

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


@pytest.mark.skipif(NO_FILTER is not None, reason=NO_FILTER or "")
def test_a_node_behind_a_nat_filter_is_upgraded_from_the_relay_to_a_direct_connection(
    swarm: LocalSwarmFixture,
    net: Lan,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """The NAT's filtering, in the kernel: ``home`` sits behind a router machine that
    forwards its packets both ways but drops every TCP connection attempt (SYN without ACK)
    on its way in (``syn_filter``, eBPF). Home dials out freely; nobody dials in. There is
    no address translation: home's own address is routed, as with a NAT that keeps ports.

    A public peer that home never dialled calls it through the relay; DCUtR then leaves a
    direct connection, opened from inside (home dials the caller), and the next call goes
    over it."""
    relay_ip = net.add("gw1")
    caller_ip = net.add("peer")
    home_ip, _ = net.behind_router("home", f"10.{net.subnet.split('.')[1]}.251")
    attach(net.machines["homegw"], "inside")
    swarm.start_gateway("gw1", listen=EVERYWHERE, wrap=net.run_in("gw1"), env=HTTP_EVERYWHERE)
    port = swarm.addr("gw1").split("/tcp/")[1].split("/")[0]
    gw1 = f"/ip4/{relay_ip}/tcp/{port}/p2p/{swarm.peer_id('gw1')}"
    home, home_port = start_home(swarm, net, home_ip, gw1)
    assert not reaches(net, "peer", home_ip, home_port)  # nobody dials in
    assert reaches(net, "home", relay_ip, port)  # home dials out
    wait_log(swarm.data_dir / "logs" / "home.log", "no relay can dial us back: private")

    caller = tmp_path / "caller"
    keys.provision(caller, swarm.data_dir, "client")
    run = [sys.executable, "-m", "tests.integration.nat_caller", str(caller), gw1]
    run += [f"/ip4/{caller_ip}/tcp/0", home]
    done = subprocess.run(
        [*net.run_in("peer"), *run], capture_output=True, text=True, timeout=240, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["first"] == {"answered": True, "relayed": True}, seen
    assert seen["second"] == {"answered": True, "relayed": False}, seen
    assert seen["hole_punches"]["direct"] == 1, seen
    record_property("upgrade_s", seen["s"])  # from the first relayed call (-rP shows it)
    print(f"upgraded to a direct connection {seen['s']} s after the first relayed call")
