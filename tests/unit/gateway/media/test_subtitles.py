"""Transcripts as SubRip and WebVTT."""

from __future__ import annotations

from gateway.media.subtitles import clock, srt, vtt
from protocols import Segment

SEGMENTS = [Segment(0.0, 1.5, " Hello\n\nthere "), Segment(3661.25, 3662.0, "a --> b")]


def test_clock() -> None:
    assert clock(3661.25, ",") == "01:01:01,250"
    assert clock(0.0004, ".") == "00:00:00.000"
    assert clock(-1, ".") == "00:00:00.000"


def test_srt() -> None:
    assert srt(SEGMENTS) == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there\n\n"
        "2\n01:01:01,250 --> 01:01:02,000\na -> b\n"
    )
    assert srt([]) == ""


def test_vtt() -> None:
    assert vtt(SEGMENTS) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there\n\n"
        "01:01:01.250 --> 01:01:02.000\na -> b\n"
    )
    assert vtt([]) == "WEBVTT\n"
