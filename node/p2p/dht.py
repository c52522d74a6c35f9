"""The swarm's rules for its Kademlia DHT.

Left alone, py-libp2p's DHT stores any value under any key (``/pk/``, ``/ipns/`` and plain
keys pass unchecked) for whoever sends it, evicting the oldest of 50,000 entries when full,
and keeps every peer that talks to it in its routing table. Here:

- only ``/bitinglip/`` keys are stored, and only values that verify: node records signed by
  the peer they name and admitted by a valid certificate, and the operator's revocation
  list; a revoked peer's record is refused;
- one sending peer may add at most ``RECORDS_PER_PEER`` records and provide at most
  ``PROVIDED_PER_PEER`` keys; the store holds at most ``MAX_RECORDS`` records and
  ``MAX_PROVIDED`` provided keys, and refuses new ones past that rather than evict;
- only admitted members that serve the DHT (nodes and gateways) enter the routing table.

The DHT's handlers see no sender, so the stream handler names it in ``SENDER`` for the
duration of each inbound stream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from protocols import (
    DHT_NAMESPACE,
    REVOKED_KEY,
    SERVER_ROLES,
    Certificate,
    RemoteProtocolError,
    record_expiry,
    record_seq,
    revocations_seq,
    verify_record,
    verify_revocations,
)

if TYPE_CHECKING:
    from libp2p.kad_dht.kad_dht import KadDHT

logger = logging.getLogger(__name__)

# A peer writes its own record, and a gateway corrects stale copies of others' records it
# read: at most one per node whose record this peer holds (~20 in a large swarm).
RECORDS_PER_PEER = 64
MAX_RECORDS = 4096
# A node provides one key per model it serves.
PROVIDED_PER_PEER = 256
MAX_PROVIDED = 4096

SENDER: ContextVar[str | None] = ContextVar("dht_sender", default=None)


class RecordValidator:
    """Validates ``/bitinglip/`` values: signed, admitted, unexpired, not revoked; the
    highest seq wins."""

    def __init__(self, operator_public: bytes, revoked: Callable[[str], bool]) -> None:
        self._operator_public = operator_public
        self._revoked = revoked

    def validate(self, key: str, value: bytes) -> None:
        try:
            if key == REVOKED_KEY:
                verify_revocations(value, self._operator_public)
                return
            record = verify_record(value, self._operator_public, time.time(), key=key)
        except RemoteProtocolError as exc:
            raise ValueError(f"rejected record for {key}: {exc}") from exc
        if self._revoked(record.peer_id):
            raise ValueError(f"rejected record for {key}: peer was revoked")

    def select(self, key: str, values: list[bytes]) -> int:
        seq = revocations_seq if key == REVOKED_KEY else record_seq
        seqs = [seq(v) for v in values]
        return max(range(len(values)), key=seqs.__getitem__)


def make_dht(host: Any, validator: RecordValidator) -> KadDHT:
    """A server-mode DHT that stores only our namespace."""
    from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
    from libp2p.records.validator import NamespacedValidator

    namespaced = NamespacedValidator({DHT_NAMESPACE: validator}, strict_validation=True)  # type: ignore[dict-item]
    return KadDHT(
        host,
        DHTMode.SERVER,
        validator=namespaced,
        validator_changed=True,  # no default /pk/ and /ipns/ namespaces
        strict_validation=True,
        # Every peer on one machine shares a subnet: lift the per-subnet cap for local swarms.
        max_peers_per_subnet=0,
    )


def guard(dht: Any, member: Callable[[str], Certificate | None]) -> None:
    """Put the quotas and the routing-table rule in front of ``dht``."""
    _name_senders(dht)
    _own_refresh_only(dht)
    _limit_records(dht.value_store)
    _limit_providers(dht.provider_store)
    _admit_to_routing_table(dht.routing_table, member)


def _name_senders(dht: Any) -> None:
    from libp2p.kad_dht.common import PROTOCOL_ID

    async def handle(stream: Any) -> None:
        token = SENDER.set(str(stream.muxed_conn.peer_id))
        try:
            await dht.handle_stream(stream)
        finally:
            SENDER.reset(token)

    dht.host.set_stream_handler(PROTOCOL_ID, handle)


def _own_refresh_only(dht: Any) -> None:
    """The DHT's service loop refreshes the routing table the moment it starts, which is
    the moment the peer joins: every peer of a swarm started together then walks the DHT at
    once, dialling tens of peers each. The host refreshes on its own staggered schedule
    (``refresh``, which calls ``peer_routing.refresh_routing_table`` itself)."""

    async def left_to_the_host() -> None:
        pass

    dht.refresh_routing_table = left_to_the_host


def _limit_records(store: Any) -> None:
    put_record = store.put_record
    writers: dict[bytes, str] = {}  # key -> the peer that last sent its value

    def limited(key: bytes, record: Any) -> None:
        sender = SENDER.get()
        if sender is not None:
            for gone in [k for k in writers if k not in store.store]:
                del writers[gone]
            if key not in store.store:
                if len(store.store) >= MAX_RECORDS:
                    raise ValueError("the DHT store is full")
                if sum(1 for w in writers.values() if w == sender) >= RECORDS_PER_PEER:
                    raise ValueError(f"{sender} already stored {RECORDS_PER_PEER} records here")
            writers[key] = sender
        put_record(key, record)

    store.put_record = limited


def _limit_providers(store: Any) -> None:
    add_provider = store.add_provider

    def limited(key: bytes, provider: Any) -> None:
        peer = str(provider.peer_id)
        if SENDER.get() is not None and peer not in store.providers.get(key, {}):
            held = sum(1 for providers in store.providers.values() if peer in providers)
            if held >= PROVIDED_PER_PEER or (
                key not in store.providers and len(store.providers) >= MAX_PROVIDED
            ):
                logger.info("refusing a provider record from %s: over its quota", peer)
                return
        add_provider(key, provider)

    store.add_provider = limited


def _admit_to_routing_table(table: Any, member: Callable[[str], Certificate | None]) -> None:
    add_peer: Callable[..., Awaitable[bool]] = table.add_peer

    async def admitted_only(peer: Any, *, skip_server_mode_check: bool = False) -> bool:
        peer_id = str(getattr(peer, "peer_id", peer))
        cert = member(peer_id)
        if cert is None or cert.role not in SERVER_ROLES:
            return False
        return await add_peer(peer, skip_server_mode_check=skip_server_mode_check)

    table.add_peer = admitted_only


def prune_expired(store: Any) -> int:
    """Drop node records whose signed expiry has passed; return how many."""
    now = time.time()
    prefix = f"/{DHT_NAMESPACE}/node/".encode()
    dead = [
        key
        for key, (record, _) in list(store.store.items())
        if key.startswith(prefix) and record_expiry(record.value) < now
    ]
    for key in dead:
        store.remove(key)
    return len(dead)
