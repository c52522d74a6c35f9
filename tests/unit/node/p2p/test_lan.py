"""What a peer announces on the LAN, and under which service type."""

from __future__ import annotations

import pytest

from node.p2p.lan import lan_addrs, on_lan, service_type


def test_the_service_type_is_the_operators_own_and_short_enough() -> None:
    ours, theirs = service_type(b"operator-a"), service_type(b"operator-b")
    assert ours != theirs
    assert ours == service_type(b"operator-a")
    name = ours.split(".")[0].lstrip("_")
    assert ours.endswith("._udp.local.") and len(name) <= 15  # RFC 6763


@pytest.mark.parametrize(
    ("listen", "announced"),
    [
        (["/ip4/127.0.0.1/tcp/0"], False),
        (["/ip6/::1/tcp/4001"], False),
        (["/ip4/0.0.0.0/tcp/4001"], True),
        (["/ip4/127.0.0.1/tcp/0", "/ip4/10.0.0.5/tcp/4001"], True),
        ([], False),
    ],
)
def test_only_peers_listening_beyond_loopback_announce(listen: list[str], announced: bool) -> None:
    assert on_lan(listen) is announced


def test_an_unspecified_address_is_announced_as_each_interface_address() -> None:
    out = lan_addrs(["/ip4/0.0.0.0/tcp/4001", "/ip4/10.1.2.3/tcp/4002"])
    assert "/ip4/10.1.2.3/tcp/4002" in out
    assert all("0.0.0.0" not in a and "/ip4/127." not in a for a in out)
    assert all(a.endswith("/tcp/4001") for a in out if a != "/ip4/10.1.2.3/tcp/4002")
