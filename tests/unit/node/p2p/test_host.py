"""The libp2p host as this project configures it."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.p2p.host import _make_host


def test_a_host_holds_thousands_of_connections_and_prunes_only_past_a_thousand() -> None:
    config = _make_host(Ed25519PrivateKey.generate()).get_network().connection_config
    # A gateway of a swarm of a few thousand nodes holds a connection to each.
    assert config.max_connections >= 4096
    assert config.high_watermark >= 1024  # py-libp2p prunes above it (idle connections only)
