"""The DHT's rules, on stand-ins for py-libp2p's stores: our namespace and valid values
only, a quota per sending peer and a cap in all, only admitted servers in the table."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys.files import raw_public
from node.p2p import dht
from node.p2p.dht import (
    MAX_PROVIDED,
    MAX_RECORDS,
    PROVIDED_PER_PEER,
    RECORDS_PER_PEER,
    SENDER,
    RecordValidator,
)
from protocols import (
    REVOKED_KEY,
    Certificate,
    Hardware,
    Load,
    NodeRecord,
    Revocations,
    issue_certificate,
    issue_revocations,
    node_key,
    peer_id_of,
    sign_record,
)

OPERATOR = Ed25519PrivateKey.generate()


def record(ttl: float = 60, seq: int = 1) -> tuple[str, bytes]:
    key = Ed25519PrivateKey.generate()
    peer = peer_id_of(raw_public(key))
    now = time.time()
    body = NodeRecord(
        peer, raw_public(key), "node", "t", [], Hardware("cpu", "t", "RAM", 1, 1), [],
        Load(0, 0, 1, 0.0, 1), seq, now, ttl,
    )  # fmt: skip
    cert = issue_certificate(OPERATOR, Certificate(peer, "node", now, now + 3600))
    return peer, sign_record(key, body, cert)


def validator(revoked: set[str] | None = None) -> RecordValidator:
    return RecordValidator(raw_public(OPERATOR), (revoked or set()).__contains__)


def test_the_validator_takes_records_and_revocation_lists_and_refuses_the_rest() -> None:
    peer, value = record()
    validator().validate(node_key(peer), value)
    validator().validate(REVOKED_KEY, issue_revocations(OPERATOR, Revocations(1, {})))
    with pytest.raises(ValueError, match="peer was revoked"):
        validator({peer}).validate(node_key(peer), value)
    with pytest.raises(ValueError, match="another peer's key"):
        validator().validate(node_key("someone"), value)
    with pytest.raises(ValueError, match="bad signature"):
        foreign = Ed25519PrivateKey.generate()
        validator().validate(REVOKED_KEY, issue_revocations(foreign, Revocations(9, {})))


def test_the_newest_value_is_selected() -> None:
    lists = [issue_revocations(OPERATOR, Revocations(seq, {})) for seq in (2, 5, 1)]
    assert validator().select(REVOKED_KEY, lists) == 1
    records = [record(seq=seq)[1] for seq in (3, 1, 7)]
    assert validator().select("/bitinglip/node/x", records) == 2


class Store:
    """py-libp2p's value store, as far as the quota sees it."""

    def __init__(self) -> None:
        self.store: dict[bytes, tuple[Any, float]] = {}

    def put_record(self, key: bytes, record: Any) -> None:
        self.store[key] = (record, 0.0)

    def remove(self, key: bytes) -> None:
        del self.store[key]


def put(store: Store, sender: str | None, key: bytes) -> bool:
    token = SENDER.set(sender)
    try:
        store.put_record(key, SimpleNamespace(value=b""))
        return True
    except ValueError:
        return False
    finally:
        SENDER.reset(token)


def test_a_sender_adds_at_most_its_quota_and_may_update_what_it_holds() -> None:
    store = Store()
    dht._limit_records(store)
    added = [
        put(store, "hog", f"/bitinglip/node/{i}".encode()) for i in range(RECORDS_PER_PEER + 3)
    ]
    assert added.count(True) == RECORDS_PER_PEER
    assert put(store, "hog", b"/bitinglip/node/0")  # an update, not a new record
    assert put(store, "other", b"/bitinglip/node/new")
    assert put(store, None, b"/bitinglip/node/own")  # our own puts are not counted
    # Records that leave the store free the quota.
    store.remove(b"/bitinglip/node/1")
    assert put(store, "hog", b"/bitinglip/node/again")


def test_the_store_refuses_new_records_when_full_and_evicts_none() -> None:
    store = Store()
    dht._limit_records(store)
    for i in range(MAX_RECORDS):
        store.store[f"k{i}".encode()] = (None, 0.0)
    assert not put(store, "peer", b"new")
    assert put(store, "peer", b"k1")  # updating a held record is fine
    assert len(store.store) == MAX_RECORDS


class Providers:
    def __init__(self) -> None:
        self.providers: dict[bytes, dict[str, Any]] = {}

    def add_provider(self, key: bytes, provider: Any) -> None:
        self.providers.setdefault(key, {})[str(provider.peer_id)] = provider


def provide(store: Providers, peer: str, key: bytes) -> bool:
    token = SENDER.set(peer)
    try:
        store.add_provider(key, SimpleNamespace(peer_id=peer))
    finally:
        SENDER.reset(token)
    return peer in store.providers.get(key, {})


def test_a_peer_provides_at_most_its_quota_of_keys_and_the_store_caps_all() -> None:
    store = Providers()
    dht._limit_providers(store)
    provided = [provide(store, "hog", f"m{i}".encode()) for i in range(PROVIDED_PER_PEER + 5)]
    assert provided.count(True) == PROVIDED_PER_PEER
    assert provide(store, "node", b"m0")  # another provider of a known key
    for i in range(MAX_PROVIDED):
        store.providers.setdefault(f"x{i}".encode(), {})
    assert not provide(store, "node", b"one-more")


async def test_only_admitted_servers_enter_the_routing_table() -> None:
    members = {"node": "node", "gateway": "gateway", "client": "client"}
    added: list[Any] = []

    async def add_peer(peer: Any, *, skip_server_mode_check: bool = False) -> bool:
        added.append(peer)
        return True

    table = SimpleNamespace(add_peer=add_peer)

    def member(peer: str) -> Certificate | None:
        role = members.get(peer)
        return None if role is None else Certificate(peer, role, 0, 2e9)

    dht._admit_to_routing_table(table, member)
    for peer in ("node", "gateway", "client", "stranger"):
        assert await table.add_peer(peer) == (peer in ("node", "gateway"))
    info = SimpleNamespace(peer_id="node")  # a PeerInfo
    assert await table.add_peer(info)
    assert added == ["node", "gateway", info]


def test_expired_records_are_pruned() -> None:
    store = Store()
    live_peer, live = record(ttl=600)
    dead_peer, dead = record(ttl=-1)
    for peer, value in ((live_peer, live), (dead_peer, dead)):
        store.store[node_key(peer).encode()] = (SimpleNamespace(value=value), 0.0)
    assert dht.prune_expired(store) == 1
    assert list(store.store) == [node_key(live_peer).encode()]
