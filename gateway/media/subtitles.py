"""Transcripts as subtitles: SubRip (``srt``) and WebVTT (``vtt``)."""

from __future__ import annotations

from collections.abc import Sequence

from protocols import Segment


def clock(seconds: float, decimal: str) -> str:
    """``HH:MM:SS<decimal>mmm``: SubRip writes a comma, WebVTT a dot."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def srt(segments: Sequence[Segment]) -> str:
    cues = [
        f"{i}\n{clock(s.start, ',')} --> {clock(s.end, ',')}\n{_line(s.text)}\n"
        for i, s in enumerate(segments, 1)
    ]
    return "\n".join(cues)


def vtt(segments: Sequence[Segment]) -> str:
    cues = [f"{clock(s.start, '.')} --> {clock(s.end, '.')}\n{_line(s.text)}\n" for s in segments]
    return "\n".join(["WEBVTT\n", *cues])


def _line(text: str) -> str:
    # A blank line ends a cue, and "-->" starts a timing line: neither may be in the text.
    return " ".join(text.split()).replace("-->", "->")
