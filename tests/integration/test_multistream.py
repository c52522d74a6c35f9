"""An endless multistream-select message, sent over raw TCP to a real libp2p host in this
process, is refused at its length prefix; the host goes on serving others."""

from __future__ import annotations

from contextlib import suppress

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys import Membership
from keys.files import raw_public
from node.p2p.host import PeerHost
from protocols import Certificate, issue_certificate, peer_id_of

LISTEN = ["/ip4/127.0.0.1/tcp/0"]
OPERATOR = Ed25519PrivateKey.generate()


def member() -> PeerHost:
    key = Ed25519PrivateKey.generate()
    cert = Certificate(peer_id_of(raw_public(key)), "node", 0, 2e9)
    return PeerHost(key, raw_public(OPERATOR), Membership(issue_certificate(OPERATOR, cert)))


async def hung_up(stream: trio.SocketStream) -> None:
    """Read until the other end closes or resets the connection."""
    with suppress(trio.BrokenResourceError):
        while await stream.receive_some(65536):
            pass


async def test_an_endless_multistream_message_is_refused_at_its_length() -> None:
    victim = member()
    async with victim.running(LISTEN, []):
        _, _, host, _, port, *_ = victim.addrs()[0].split("/")
        attacker = await trio.open_tcp_stream(host, int(port))
        # A "protocol name" of 1 GiB, of which only the start ever comes.
        await attacker.send_all(b"\x80\x80\x80\x80\x04" + b"/multistream/" + b"x" * 4096)
        with trio.fail_after(3):  # refused at once, not after the 30 s negotiation timeout
            await hung_up(attacker)
        # Pushing more goes nowhere: the peer has hung up.
        with pytest.raises((trio.BrokenResourceError, trio.ClosedResourceError)):
            with trio.fail_after(10):
                for _ in range(1024):
                    await attacker.send_all(b"x" * 65536)
        # Others are served as before.
        other = member()
        async with other.running(LISTEN, [victim.addrs()[0]]):
            assert victim.peer_id in {str(p) for p in other.host.get_connected_peers()}
