"""Dial-back: its frames, which addresses a relay tries, and the exchange over a stream."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from node.p2p.dialback import Answers, ask, read_addrs, tcp_probe
from node.p2p.streams import TrioByteStream
from protocols import RemoteProtocolError
from protocols.codec import pack
from protocols.errors import FrameTooLarge
from protocols.framing import encode_frame
from protocols.reachability import (
    DIALBACK_MAX_FRAME,
    MAX_ADDRS,
    decode_addrs,
    dialable,
    encode_addrs,
    tcp_endpoint,
)

HOME = ["/ip4/192.168.1.5/tcp/4001", "/ip4/203.0.113.7/tcp/4001", "/ip6/2001:db8::7/tcp/4001"]


def test_addresses_go_in_one_capped_frame_and_come_back_out() -> None:
    frame = encode_addrs(HOME)
    assert decode_addrs(frame[4:]) == HOME
    many = [f"/ip4/10.0.0.{i}/tcp/4001" for i in range(20)]
    assert decode_addrs(encode_addrs(many)[4:]) == many[:MAX_ADDRS]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"addrs": "x"}, "addrs should be a list"),
        ({"addrs": [1]}, "addrs should be a string"),
        ({}, "addrs should be a list"),
        ({"addrs": ["/ip4/1.2.3.4/tcp/1"] * (MAX_ADDRS + 1)}, "over 8"),
    ],
)
def test_a_malformed_dial_back_is_refused(body: dict[str, object], message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        decode_addrs(pack(body))


@pytest.mark.parametrize(
    ("addr", "endpoint"),
    [
        ("/ip4/203.0.113.7/tcp/4001", ("203.0.113.7", 4001)),
        ("/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW", ("203.0.113.7", 4001)),
        ("/ip6/2001:db8::7/tcp/4001", ("2001:db8::7", 4001)),
        ("/ip4/2001:db8::7/tcp/4001", None),
        ("/ip4/203.0.113.7/udp/4001/quic-v1", None),
        ("/dns4/example.org/tcp/4001", None),
        ("/ip4/203.0.113.7/tcp/0", None),
        ("/ip4/203.0.113.7/tcp/70000", None),
        ("/ip4/nonsense/tcp/1", None),
        ("/p2p/12D3KooW/p2p-circuit/p2p/12D3KooX", None),
        ("", None),
    ],
)
def test_only_tcp_addresses_have_an_endpoint(addr: str, endpoint: tuple[str, int] | None) -> None:
    assert tcp_endpoint(addr) == endpoint


def test_a_relay_tries_only_the_addresses_at_the_ip_it_sees() -> None:
    assert dialable(HOME, "203.0.113.7") == [(HOME[1], "203.0.113.7", 4001)]
    assert dialable(HOME, "198.51.100.1") == []  # behind a NAT: not at the address seen


async def exchange(addrs: list[str], observed: str | None) -> tuple[list[str], list[str]]:
    """What the asker hears back, and what the relay tried."""
    tried: list[str] = []

    async def probe(ip: str, port: int) -> bool:
        tried.append(f"{ip}:{port}")
        return port == 4001

    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(Answers(probe).answer, TrioByteStream(right), "asker", observed)
        heard = await ask(TrioByteStream(left), addrs)
    return heard, tried


async def test_the_asker_hears_which_of_its_addresses_took_a_connection() -> None:
    addrs = ["/ip4/203.0.113.7/tcp/4001", "/ip4/203.0.113.7/tcp/4002", "/ip4/10.0.0.2/tcp/4001"]
    heard, tried = await exchange(addrs, "203.0.113.7")
    assert heard == ["/ip4/203.0.113.7/tcp/4001"]
    assert sorted(tried) == ["203.0.113.7:4001", "203.0.113.7:4002"]  # never 10.0.0.2


async def test_a_question_through_a_relay_is_answered_with_nothing_tried() -> None:
    assert await exchange(HOME, None) == ([], [])


async def test_one_question_at_a_time_per_asker_is_tried() -> None:
    release = trio.Event()
    tried: list[int] = []

    async def slow(ip: str, port: int) -> bool:
        tried.append(port)
        await release.wait()
        return True

    answers = Answers(slow)
    addrs = ["/ip4/203.0.113.7/tcp/4001"]
    first, second, other = (trio.testing.memory_stream_pair() for _ in range(3))
    heard: dict[str, list[str]] = {}

    async def asking(name: str, pair: tuple[trio.abc.Stream, trio.abc.Stream], peer: str) -> None:
        nursery.start_soon(answers.answer, TrioByteStream(pair[1]), peer, "203.0.113.7")
        heard[name] = await ask(TrioByteStream(pair[0]), addrs)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(asking, "first", first, "asker")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(asking, "second", second, "asker")  # while the first is tried
        nursery.start_soon(asking, "other", other, "someone else")
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert heard == {"first": addrs, "second": [], "other": addrs}
    assert tried == [4001, 4001]


async def test_garbage_or_an_oversized_frame_is_a_protocol_error() -> None:
    for data, error in (
        (encode_frame(b"\xc1"), RemoteProtocolError),
        (encode_frame(b"x" * 10, 1 << 20)[:4] + b"x", RemoteProtocolError),
        ((DIALBACK_MAX_FRAME + 1).to_bytes(4, "big"), FrameTooLarge),
    ):
        left, right = trio.testing.memory_stream_pair()
        await left.send_all(data)
        await left.aclose()
        with pytest.raises(error):
            await read_addrs(TrioByteStream(right))


async def test_a_tcp_probe_tells_an_open_port_from_a_closed_one() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    assert await tcp_probe("127.0.0.1", port)
    await listeners[0].aclose()
    assert not await tcp_probe("127.0.0.1", port)
