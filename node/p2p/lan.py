"""Peers on one network segment find each other with mDNS: no bootstrap address needed.

py-libp2p's ``MDNSDiscovery`` (zeroconf) announces this peer under a service type of this
swarm's own, ``_p2p-bl<operator key fingerprint>._udp.local.``, so peers of other swarms on
the same LAN neither hear nor dial each other; and a peer heard this way is only a
candidate: the connection is admitted by certificate like any other (``node.p2p.gate``).

zeroconf runs in its own threads and reports peers through py-libp2p's process-wide
``peerDiscovery`` emitter; the report crosses into trio through a bounded channel and
each new peer is dialled from there. A listen address of ``0.0.0.0`` is announced as
every IPv4 address of this machine's interfaces that are up, loopback excepted.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import socket
from typing import Any

import psutil  # type: ignore[import-untyped]
import trio

from node.p2p.host import PeerHost

logger = logging.getLogger(__name__)

# Reports waiting to be dialled; past this (a flood of announcements) the extra are dropped:
# zeroconf announces again, and the DHT finds the peers anyway.
PENDING = 256


def service_type(operator_public: bytes) -> str:
    """This swarm's mDNS service type (its name part is at most 15 characters, RFC 6763)."""
    return f"_p2p-bl{hashlib.sha256(operator_public).hexdigest()[:8]}._udp.local."


def on_lan(listen: list[str]) -> bool:
    """Whether any of these listen addresses is reachable from the LAN: a peer listening
    on loopback alone (a local swarm, a test) has nothing to announce."""
    parts = [a.split("/") for a in listen]
    hosts = [p[2] for p in parts if len(p) > 2 and p[1] in ("ip4", "ip6")]
    return any(not ipaddress.ip_address(h).is_loopback for h in hosts)


def lan_addrs(addrs: list[str]) -> list[str]:
    """``addrs`` with each unspecified IPv4 address replaced by this machine's addresses."""
    up = {name for name, stats in psutil.net_if_stats().items() if stats.isup}
    local = [
        a.address
        for name, entries in psutil.net_if_addrs().items()
        if name in up
        for a in entries
        if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback
    ]
    out: list[str] = []
    for addr in addrs:
        if addr.startswith("/ip4/0.0.0.0/"):
            out += [addr.replace("/ip4/0.0.0.0/", f"/ip4/{ip}/", 1) for ip in local]
        else:
            out.append(addr)
    return out


async def discover_on_lan(host: PeerHost) -> None:
    """Announce ``host`` on the LAN and connect to every member peer heard there."""
    from libp2p.discovery.events.peerDiscovery import peerDiscovery
    from libp2p.discovery.mdns.mdns import MDNSDiscovery

    token = trio.lowlevel.current_trio_token()
    send, receive = trio.open_memory_channel[str](PENDING)

    def heard(info: Any) -> None:  # in a zeroconf thread
        peer = str(info.peer_id)
        if peer == host.peer_id:
            return
        with contextlib.suppress(trio.WouldBlock, trio.RunFinishedError, trio.ClosedResourceError):
            trio.from_thread.run_sync(send.send_nowait, peer, trio_token=token)

    peerDiscovery.register_peer_discovered_handler(heard)
    mdns = None
    try:
        addrs = lan_addrs([a.split("/p2p/")[0] for a in host.direct_addrs()])
        mdns = await trio.to_thread.run_sync(
            lambda: MDNSDiscovery(
                host.host.get_network(),
                listen_addrs=addrs,
                service_type=service_type(host.admission.operator_public),
            )
        )
        # Registration waits on zeroconf's probes: not on the trio thread.
        await trio.to_thread.run_sync(mdns.broadcaster.register)
        logger.info("announcing on the LAN: %s", " ".join(addrs))
        async with trio.open_nursery() as nursery:
            async for peer in receive:
                if peer not in host.connected_members():
                    nursery.start_soon(host.connect_known, peer)
    finally:
        peerDiscovery.unregister_peer_discovered_handler(heard)
        if mdns is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_stop, mdns)


def _stop(mdns: Any) -> None:
    mdns.broadcaster.unregister()
    mdns.listener.stop()
    mdns.zeroconf.close()
