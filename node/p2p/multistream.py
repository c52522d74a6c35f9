"""Bounds what a peer can make multistream-select read.

Every connection and every stream starts with multistream-select: length-prefixed
protocol names. py-libp2p 0.8.1 believes any announced length, so one raw TCP connection,
before any handshake, can make a peer read and hold an endless "protocol name" for the 30 s
negotiation timeout (GHSA-hmjq-g7pp-rw3x, fixed in 0.8.2). ``bound_multistream_reads``
replaces that read with one that refuses a message longer than ``MAX_MESSAGE`` as soon as
its length prefix arrives. Raise the floor to ``libp2p>=0.8.2`` and drop this module once
the registry serves it.
"""

from __future__ import annotations

from typing import Any

# Protocol names are tens of bytes; go-libp2p refuses far less than this too.
MAX_MESSAGE = 1024


async def _bounded_read(communicator: Any) -> str:
    from libp2p.exceptions import ParseError
    from libp2p.io.exceptions import IOException, MsgioException
    from libp2p.protocol_muxer.exceptions import MultiselectCommunicatorError
    from libp2p.utils.varint import read_varint_prefixed_bytes_limited

    try:
        data = await read_varint_prefixed_bytes_limited(communicator.read_writer, MAX_MESSAGE)
        if data[-1:] != b"\n":
            raise ParseError("a multistream message ends with a newline")
        return data[:-1].decode()
    except (ParseError, IOException, MsgioException, UnicodeDecodeError) as exc:
        raise MultiselectCommunicatorError(f"refused multistream message: {exc}") from exc


def bound_multistream_reads() -> None:
    """Make every multistream-select read in this process bounded (idempotent)."""
    from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator

    MultiselectCommunicator.read = _bounded_read  # type: ignore[method-assign,assignment]
