"""Dial-back: a peer asks a relay whether others can open connections to it.

The asker sends the addresses it listens on, one frame; the relay opens a TCP connection to
each of them whose IP is the one the asker's own connection comes from, and to nothing
else (so no member can aim it at a third host), and answers with the addresses that took
the connection, one frame. A peer behind a NAT listens on an address the relay does not
see it come from, so it hears back none.
"""

from __future__ import annotations

import ipaddress

from protocols.codec import pack, unpack_map
from protocols.errors import RemoteProtocolError
from protocols.framing import encode_frame
from protocols.validate import exact

DIALBACK_PROTOCOL = "/bitinglip/dialback/1.0.0"
DIALBACK_MAX_FRAME = 4096
MAX_ADDRS = 8  # a peer listens on a few addresses; the relay dials no more than this


def encode_addrs(addrs: list[str]) -> bytes:
    """One frame carrying ``addrs`` (at most ``MAX_ADDRS`` of them), a request or an answer."""
    return encode_frame(pack({"addrs": addrs[:MAX_ADDRS]}), DIALBACK_MAX_FRAME)


def decode_addrs(payload: bytes) -> list[str]:
    """The addresses in one frame's payload; ``RemoteProtocolError`` if malformed."""
    body = unpack_map(payload)
    try:
        addrs = [exact(a, str, "addrs") for a in exact(body.get("addrs"), list, "addrs")]
    except ValueError as exc:
        raise RemoteProtocolError(f"malformed dial-back: {exc}") from exc
    if len(addrs) > MAX_ADDRS:
        raise RemoteProtocolError(f"dial-back of {len(addrs)} addresses, over {MAX_ADDRS}")
    return addrs


def tcp_endpoint(addr: str) -> tuple[str, int] | None:
    """The IP and TCP port of ``/ip4/<ip>/tcp/<port>...`` (or ``/ip6``); ``None`` for any
    other kind of address."""
    parts = addr.split("/")
    if len(parts) < 5 or parts[0] or parts[1] not in ("ip4", "ip6") or parts[3] != "tcp":
        return None
    try:
        ip = ipaddress.ip_address(parts[2])
        port = int(parts[4])
    except ValueError:
        return None
    if ip.version != (4 if parts[1] == "ip4" else 6) or not 0 < port < 65536:
        return None
    return str(ip), port


def dialable(addrs: list[str], observed_ip: str) -> list[tuple[str, str, int]]:
    """Of ``addrs``, the TCP ones at ``observed_ip``, each with its IP and port."""
    found = []
    for addr in addrs:
        endpoint = tcp_endpoint(addr)
        if endpoint is not None and endpoint[0] == observed_ip:
            found.append((addr, *endpoint))
    return found
