"""Framing at its limits: the exact size cap, what the errors say, default sizes."""

from __future__ import annotations

import struct

import pytest

from protocols import DEFAULT_MAX_FRAME, FrameDecoder, FrameTooLarge, LocalProtocolError
from protocols.framing import encode_frame


def test_encode_accepts_exactly_the_cap_and_names_sizes_when_over() -> None:
    assert encode_frame(b"x" * 8, max_frame=8) == b"\x00\x00\x00\x08" + b"x" * 8
    with pytest.raises(LocalProtocolError, match=r"^frame of 9 bytes exceeds 8$"):
        encode_frame(b"x" * 9, max_frame=8)


def test_encode_uses_the_default_cap() -> None:
    assert len(encode_frame(b"x" * DEFAULT_MAX_FRAME)) == DEFAULT_MAX_FRAME + 4
    with pytest.raises(LocalProtocolError, match=f"exceeds {DEFAULT_MAX_FRAME}$"):
        encode_frame(b"x" * (DEFAULT_MAX_FRAME + 1))


def test_decoder_uses_the_default_cap() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(struct.pack(">I", DEFAULT_MAX_FRAME)) == []
    assert decoder.pending == 4
    with pytest.raises(FrameTooLarge, match=f"^frame of {DEFAULT_MAX_FRAME + 1} bytes exceeds"):
        FrameDecoder().feed(struct.pack(">I", DEFAULT_MAX_FRAME + 1))


def test_decoder_error_names_the_announced_length_and_the_cap() -> None:
    with pytest.raises(FrameTooLarge, match=r"^frame of 17 bytes exceeds 16$"):
        FrameDecoder(max_frame=16).feed(struct.pack(">I", 17))


def test_decoder_accepts_a_header_at_exactly_the_cap() -> None:
    decoder = FrameDecoder(max_frame=3)
    assert decoder.feed(struct.pack(">I", 3) + b"ab") == []
    assert decoder.pending == 6
    assert decoder.feed(b"c") == [b"abc"]


def test_empty_frames_complete_as_soon_as_their_header_arrives() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"\x00\x00\x00") == []
    assert decoder.pending == 3
    assert decoder.feed(b"\x00" + b"\x00\x00\x00\x00") == [b"", b""]
    assert decoder.pending == 0


def test_bytes_after_a_frame_stay_pending_for_the_next_one() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(b"one") + b"\x00\x00") == [b"one"]
    assert decoder.pending == 2
    assert decoder.feed(b"\x00\x03two" + encode_frame(b"3")) == [b"two", b"3"]
    assert decoder.pending == 0


def test_decoded_frames_are_immutable_bytes_not_views_of_the_buffer() -> None:
    decoder = FrameDecoder()
    (frame,) = decoder.feed(encode_frame(b"abc"))
    assert type(frame) is bytes
    decoder.feed(encode_frame(b"xyz")[:5])
    assert frame == b"abc"


def test_the_first_frame_has_its_own_cap_and_later_frames_the_full_one() -> None:
    with pytest.raises(FrameTooLarge, match=r"^frame of 9 bytes exceeds 8$"):
        FrameDecoder(max_frame=64, first_max_frame=8).feed(struct.pack(">I", 9))
    decoder = FrameDecoder(max_frame=64, first_max_frame=8)
    # A small first frame and a large second one in the same bytes.
    assert decoder.feed(encode_frame(b"hello") + encode_frame(b"x" * 64)) == [b"hello", b"x" * 64]
    with pytest.raises(FrameTooLarge, match=r"exceeds 64$"):
        decoder.feed(struct.pack(">I", 65))
