"""Parameters and answers of speech calls (text to speech, speech to text), as they travel
between gateway and node.

Audio crosses the swarm as 16-bit little-endian mono PCM with its sample rate, never in a
container: there is nothing for a peer to get wrong but the length and the rate, and both
are checked here. A speech call streams its audio as ``AudioChunk`` frames; a transcription
call carries one window of at most ``WINDOW_SECONDS`` (the gateway cuts longer audio) and
is answered by one ``Transcript``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Self

from protocols.errors import RemoteProtocolError
from protocols.generation import PeerParams
from protocols.validate import exact, finite, required

MAX_SPEECH_CHARS = 4096
MAX_VOICE_CHARS = 64
MIN_SPEED, MAX_SPEED = 0.25, 4.0
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8_000, 48_000
# The rate audio is sent at to be transcribed: what Whisper-family models hear.
TRANSCRIBE_RATE = 16_000
# One transcription call hears at most this much; the gateway cuts longer audio into windows.
# 30 s is Whisper's own window, and at the highest rate it still fits one RPC frame.
WINDOW_SECONDS = 30.0
SAMPLE_BYTES = 2  # 16-bit PCM
# PCM in one streamed chunk: a quarter of an RPC frame.
MAX_CHUNK_BYTES = 1 << 20
MAX_TRANSCRIBE_PROMPT_CHARS = 4000
MAX_TRANSCRIPT_CHARS = 100_000
MAX_SEGMENTS = 2000
SPEECH_TASKS = ("transcribe", "translate")
# An ISO 639-1 code (and the few three-letter codes Whisper knows, such as "haw").
_LANGUAGE = re.compile(r"[a-z]{2,3}")


def pcm_seconds(pcm: bytes, sample_rate: int) -> float:
    """How long ``pcm`` (16-bit mono at ``sample_rate``) plays."""
    return len(pcm) / SAMPLE_BYTES / sample_rate


def _rate_problem(rate: int) -> str | None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        return f"sample_rate must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE}"
    return None


@dataclass(frozen=True)
class SpeechParams(PeerParams):
    """One text-to-speech call: ``input`` spoken by ``voice`` ("" for the model's own) at
    ``speed`` times the model's pace."""

    _WHAT = "speech"

    model: str
    input: str
    voice: str = ""
    speed: float = 1.0

    def _problem(self) -> str | None:
        if not self.input.strip():
            return "input must not be empty"
        if len(self.input) > MAX_SPEECH_CHARS:
            return f"input is longer than {MAX_SPEECH_CHARS} characters"
        if len(self.voice) > MAX_VOICE_CHARS:
            return f"voice is longer than {MAX_VOICE_CHARS} characters"
        if not MIN_SPEED <= self.speed <= MAX_SPEED:
            return f"speed must be between {MIN_SPEED:g} and {MAX_SPEED:g}"
        return None

    @classmethod
    def _parse(cls, body: dict[str, Any]) -> Self:
        return cls(
            model=required(body, "model", str),
            input=required(body, "input", str),
            voice=required(body, "voice", str),
            speed=finite(body.get("speed"), "speed"),
        )


@dataclass(frozen=True)
class AudioChunk:
    """A piece of speech as it is made: 16-bit little-endian mono PCM at ``sample_rate``."""

    pcm: bytes
    sample_rate: int

    def __post_init__(self) -> None:
        if len(self.pcm) % SAMPLE_BYTES:
            raise ValueError("audio must be whole 16-bit samples")
        if len(self.pcm) > MAX_CHUNK_BYTES:
            raise ValueError(f"an audio chunk holds at most {MAX_CHUNK_BYTES} bytes")
        if problem := _rate_problem(self.sample_rate):
            raise ValueError(problem)

    @property
    def seconds(self) -> float:
        return pcm_seconds(self.pcm, self.sample_rate)

    def to_wire(self) -> dict[str, Any]:
        return {"audio": self.pcm, "rate": self.sample_rate}

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> AudioChunk:
        try:
            return cls(required(body, "audio", bytes), required(body, "rate", int))
        except (TypeError, ValueError) as exc:
            raise RemoteProtocolError(f"bad audio chunk: {exc}") from exc


@dataclass(frozen=True)
class TranscribeParams(PeerParams):
    """One window of speech to write down (``transcribe``) or to put into English
    (``translate``): ``audio`` is 16-bit mono PCM at ``sample_rate``, at most
    ``WINDOW_SECONDS`` long. ``timestamps`` asks for segments with their times."""

    _WHAT = "transcription"

    model: str
    audio: bytes
    sample_rate: int = TRANSCRIBE_RATE
    task: str = "transcribe"
    language: str | None = None  # None: the model tells
    prompt: str = ""
    temperature: float = 0.0
    timestamps: bool = False

    def _problem(self) -> str | None:
        if problem := _rate_problem(self.sample_rate):
            return problem
        if not self.audio or len(self.audio) % SAMPLE_BYTES:
            return "audio must be whole 16-bit samples, at least one"
        if pcm_seconds(self.audio, self.sample_rate) > WINDOW_SECONDS:
            return f"one call hears at most {WINDOW_SECONDS:g} s of audio"
        if self.task not in SPEECH_TASKS:
            return f"task must be one of {', '.join(SPEECH_TASKS)}"
        if self.language is not None and not _LANGUAGE.fullmatch(self.language):
            return "language must be an ISO 639-1 code such as 'en'"
        if len(self.prompt) > MAX_TRANSCRIBE_PROMPT_CHARS:
            return f"prompt is longer than {MAX_TRANSCRIBE_PROMPT_CHARS} characters"
        if not 0.0 <= self.temperature <= 1.0:
            return "temperature must be between 0 and 1"
        return None

    @property
    def seconds(self) -> float:
        return pcm_seconds(self.audio, self.sample_rate)

    @classmethod
    def _parse(cls, body: dict[str, Any]) -> Self:
        language = body.get("language")
        return cls(
            model=required(body, "model", str),
            audio=required(body, "audio", bytes),
            sample_rate=required(body, "sample_rate", int),
            task=required(body, "task", str),
            language=None if language is None else exact(language, str, "language"),
            prompt=required(body, "prompt", str),
            temperature=finite(body.get("temperature"), "temperature"),
            timestamps=required(body, "timestamps", bool),
        )


@dataclass(frozen=True)
class Segment:
    """A stretch of a transcript and when it is said, in seconds from the window's start."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    """What a node heard in one window: the text, the language it was in (an ISO 639-1
    code such as "en", or "" where unknown), its segments if asked for, and the tokens of
    the prompt it was given and of the text it wrote."""

    text: str
    language: str = ""
    segments: list[Segment] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, body: dict[str, Any], seconds: float) -> Transcript:
        """Parse a node's answer for a window of ``seconds``; segment times are kept
        inside the window."""
        try:
            text = required(body, "text", str)
            if len(text) > MAX_TRANSCRIPT_CHARS:
                raise ValueError(f"text is longer than {MAX_TRANSCRIPT_CHARS} characters")
            raw = required(body, "segments", list)
            if len(raw) > MAX_SEGMENTS:
                raise ValueError(f"more than {MAX_SEGMENTS} segments")
            segments = [_segment(exact(s, dict, "segment"), seconds) for s in raw]
            language = required(body, "language", str)
            if language and not _LANGUAGE.fullmatch(language):
                raise ValueError("language is not an ISO 639-1 code")
            return cls(
                text=text,
                language=language,
                segments=segments,
                prompt_tokens=_count(body, "prompt_tokens"),
                completion_tokens=_count(body, "completion_tokens"),
            )
        except (TypeError, ValueError, OverflowError) as exc:
            raise RemoteProtocolError(f"bad transcript: {exc}") from exc


def _segment(body: dict[str, Any], seconds: float) -> Segment:
    start = min(max(0.0, finite(body.get("start"), "start")), seconds)
    end = min(max(start, finite(body.get("end"), "end")), seconds)
    text = required(body, "text", str)
    if len(text) > MAX_TRANSCRIPT_CHARS:
        raise ValueError("a segment is longer than the transcript may be")
    return Segment(start, end, text)


def _count(body: dict[str, Any], name: str) -> int:
    value = exact(body.get(name, 0), int, name)
    if not 0 <= value < 2**31:
        raise ValueError(f"{name} is out of range")
    return value
