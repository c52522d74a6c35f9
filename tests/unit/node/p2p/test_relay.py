"""Relay settings from config, circuit addresses, and which addresses a peer advertises."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.config import GatewayConfig
from keys import Membership
from keys.files import raw_public
from node.p2p.config import load
from node.p2p.host import PeerHost
from node.p2p.relay import RelaySettings, circuit_addr, is_circuit, relay_of, settings_of
from node.worker.config import NodeConfig
from protocols import Certificate, issue_certificate, peer_id_of

RELAY = "12D3KooWJbGJ8yot3tksnuQZ1br4tmTw7KzmmmtUk5Hx4cdCnxxr"
PEER = "12D3KooWC4EjkcVwy2CUfqApSmBhdE2HBoVw3LPGNkakj3UoYst4"


def test_gateways_relay_and_nodes_do_not_by_default_and_both_are_public() -> None:
    gateway = settings_of(load(GatewayConfig, "gateway", {}))
    node_config = load(NodeConfig, "node", {})
    node = settings_of(node_config, node_config.reachability)
    assert gateway.serve and not node.serve
    assert gateway.reachability == node.reachability == "public"


def test_a_node_is_made_private_and_a_relay_capped_from_its_file_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "node.toml"
    file.write_text("[node]\nrelay = true\nrelay_reservations = 4\nrelay_circuit_bytes = 1000\n")
    monkeypatch.setenv("BITINGLIP_NODE_REACHABILITY", "private")
    config = load(NodeConfig, "node", {}, file)
    settings = settings_of(config, config.reachability)
    assert settings == RelaySettings(
        serve=True, reachability="private", reservations=4, circuit_bytes=1000
    )
    assert host(settings).nat.private


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"reachability": "hidden"}, "must be one of auto, public, private, not 'hidden'"),
        ({"relay_reservations": 0}, "relay reservations must be at least 1"),
        ({"relay_circuit_seconds": -1}, "relay circuit_seconds must not be negative"),
        ({"relay_circuit_bytes": -5}, "relay circuit_bytes must not be negative"),
    ],
)
def test_a_wrong_relay_setting_is_named(setting: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config = load(NodeConfig, "node", setting)
        settings_of(config, config.reachability)


def test_a_circuit_address_names_the_relay_and_the_peer() -> None:
    addr = circuit_addr(RELAY, PEER)
    assert addr == f"/p2p/{RELAY}/p2p-circuit/p2p/{PEER}"
    assert is_circuit(addr) and relay_of(addr) == RELAY
    with_transport = f"/ip4/10.0.0.1/tcp/4002/p2p/{RELAY}/p2p-circuit/p2p/{PEER}"
    assert relay_of(with_transport) == RELAY
    assert not is_circuit(f"/ip4/10.0.0.1/tcp/4001/p2p/{PEER}")


@pytest.mark.parametrize(
    "addr",
    [f"/ip4/10.0.0.1/tcp/4001/p2p/{PEER}", f"/p2p-circuit/p2p/{PEER}", "/ip4/10.0.0.1/p2p-circuit"],
)
def test_what_is_not_a_circuit_through_a_named_relay_is_refused(addr: str) -> None:
    with pytest.raises(ValueError, match="not a circuit address"):
        relay_of(addr)


def host(settings: RelaySettings) -> PeerHost:
    operator, key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    now = time.time()
    cert = Certificate(peer_id_of(raw_public(key)), "node", now, now + 60)
    membership = Membership(issue_certificate(operator, cert))
    return PeerHost(key, raw_public(operator), membership, None, settings)


def test_a_private_peer_advertises_its_circuits_once_a_relay_holds_a_slot() -> None:
    private = host(RelaySettings(reachability="private"))
    assert private.addrs() == private.direct_addrs()  # nothing better yet
    private.nat.reserved[RELAY] = time.time() + 60
    assert private.addrs() == [circuit_addr(RELAY, private.peer_id)]
    public = host(RelaySettings())
    public.nat.reserved[RELAY] = time.time() + 60
    assert public.addrs() == public.direct_addrs()


def test_an_auto_peer_is_private_only_once_no_relay_could_dial_it_back() -> None:
    auto = host(RelaySettings(reachability="auto"))
    assert not auto.nat.private  # nothing known: it advertises its own addresses
    auto.nat.reachable = False
    auto.nat.reserved[RELAY] = time.time() + 60
    assert auto.nat.private and auto.addrs() == [circuit_addr(RELAY, auto.peer_id)]
    auto.nat.reachable = True
    assert not auto.nat.private and auto.addrs() == auto.direct_addrs()
