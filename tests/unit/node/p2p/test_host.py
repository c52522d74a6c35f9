"""The libp2p host as this project configures it."""

from __future__ import annotations

from typing import Any, cast

import multiaddr
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys.files import raw_public
from node.p2p.host import _make_host
from node.p2p.peerstore import sweep
from protocols import peer_id_of


def test_a_host_holds_thousands_of_connections_and_prunes_only_past_a_thousand() -> None:
    config = _make_host(Ed25519PrivateKey.generate()).get_network().connection_config
    # A gateway of a swarm of a few thousand nodes holds a connection to each.
    assert config.max_connections >= 4096
    assert config.high_watermark >= 1024  # py-libp2p prunes above it (idle connections only)


def test_a_peer_whose_addresses_expired_is_swept_with_its_signed_record() -> None:
    from libp2p.peer.id import ID
    from libp2p.peer.peerstore import PeerStore, PeerStoreError

    def expired_store() -> tuple[Any, Any]:
        store = PeerStore()
        peer = ID.from_base58(peer_id_of(raw_public(Ed25519PrivateKey.generate())))
        store.add_addrs(peer, [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/4001")], ttl=1)
        store.peer_record_map[peer] = cast(Any, object())  # as identify leaves a signed record
        store.peer_data_map[peer].last_identified -= 10  # its addresses' TTL has passed
        return store, peer

    store, peer = expired_store()
    with pytest.raises(PeerStoreError):  # py-libp2p's own sweep: it ended the host
        store._cleanup_expired_records()
    store, peer = expired_store()
    sweep(store)
    assert peer not in store.peer_data_map and peer not in store.peer_record_map
