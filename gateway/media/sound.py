"""Audio files in and out: uploads decoded into the swarm's PCM, speech encoded for callers.

Uploads are read with libsndfile (through ``soundfile``): WAV, FLAC, MP3, OGG Vorbis and
Opus, and a few rarer formats. They are read a block at a time, mixed down to mono and
resampled (``soxr``) to ``TRANSCRIBE_RATE`` as they are read, so memory holds only the
result and a file that runs past the duration limit is refused before it is all decoded.

Long audio is cut into windows of at most ``WINDOW_SECONDS``, each at the quietest moment
of its last seconds so that a cut rarely falls inside a word.

Speech goes out as WAV or raw PCM a chunk at a time (a streamed WAV says "length unknown"
in its header, as streamed WAVs do), or as MP3, FLAC or Opus encoded whole.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.media.errors import BadMedia
from protocols.audio import TRANSCRIBE_RATE, WINDOW_SECONDS

READ_FORMATS = "WAV, FLAC, MP3, OGG (Vorbis or Opus)"
BLOCK_FRAMES = 1 << 16
MAX_CHANNELS = 32
# Where a window may be cut: within its last seconds, at the quietest tenth of a second.
CUT_SEARCH_SECONDS = 5.0
CUT_FRAME_SECONDS = 0.1
# OpenAI's raw PCM: 24 kHz, 16-bit, mono, little-endian.
PCM_RATE = 24_000
SPEECH_FORMATS = ("wav", "mp3", "flac", "opus", "pcm")
CONTENT_TYPES = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "opus": "audio/ogg",
    "pcm": "audio/pcm",
}
_UNKNOWN = 0xFFFFFFFF
# The rates each encoder takes; other rates are resampled to the first one.
_ENCODERS: dict[str, tuple[str, str, tuple[int, ...]]] = {
    "mp3": ("MP3", "MPEG_LAYER_III", (24_000, 8_000, 11_025, 12_000, 16_000, 22_050, 32_000,
                                      44_100, 48_000)),
    "flac": ("FLAC", "PCM_16", ()),
    "opus": ("OGG", "OPUS", (48_000, 8_000, 12_000, 16_000, 24_000)),
}  # fmt: skip


@dataclass(frozen=True)
class Decoded:
    """An upload as the swarm hears it: 16-bit mono PCM at ``TRANSCRIBE_RATE``."""

    pcm: np.ndarray[Any, np.dtype[np.int16]]

    @property
    def seconds(self) -> float:
        return len(self.pcm) / TRANSCRIBE_RATE


def decode_audio(data: bytes, max_seconds: float) -> Decoded:
    """Decode an uploaded audio file; ``BadMedia`` if it is not audio, is empty, or plays
    longer than ``max_seconds``. Blocking: run it in a thread."""
    import soundfile
    import soxr

    try:
        source = soundfile.SoundFile(io.BytesIO(data))
    except (soundfile.SoundFileError, RuntimeError, TypeError, ValueError) as exc:
        raise BadMedia(f"the file is not audio that can be read here ({READ_FORMATS})") from exc
    with source:
        rate, channels = int(source.samplerate), int(source.channels)
        if rate <= 0 or not 1 <= channels <= MAX_CHANNELS:
            raise BadMedia(f"the audio has {channels} channels at {rate} Hz: not usable")
        limit = int(max_seconds * rate)
        resampler = soxr.ResampleStream(rate, TRANSCRIBE_RATE, 1, dtype="float32")
        pieces: list[np.ndarray[Any, np.dtype[np.float32]]] = []
        read = 0
        try:
            for block in source.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True):
                read += len(block)
                if read > limit:
                    raise BadMedia(f"the audio is longer than {max_seconds:g} seconds")
                pieces.append(resampler.resample_chunk(block.mean(axis=1), last=False))
        except (soundfile.SoundFileError, RuntimeError) as exc:
            raise BadMedia(f"the audio is damaged: {exc}") from exc
        pieces.append(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    mono = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if not len(mono):
        raise BadMedia("the audio is empty")
    return Decoded((np.clip(mono, -1.0, 1.0) * 32767).round().astype(np.int16))


def windows(decoded: Decoded) -> Iterator[tuple[float, bytes]]:
    """``decoded`` cut into windows of at most ``WINDOW_SECONDS``: (start in seconds, PCM)."""
    pcm = decoded.pcm
    size = int(WINDOW_SECONDS * TRANSCRIBE_RATE)
    start = 0
    while start < len(pcm):
        end = min(len(pcm), start + size)
        if end < len(pcm):
            end = _quiet_cut(pcm, start, end)
        yield start / TRANSCRIBE_RATE, pcm[start:end].astype("<i2").tobytes()
        start = end


def _quiet_cut(pcm: np.ndarray[Any, np.dtype[np.int16]], start: int, end: int) -> int:
    """The end of the quietest frame in the last seconds before ``end``."""
    frame = int(CUT_FRAME_SECONDS * TRANSCRIBE_RATE)
    first = max(start + frame, end - int(CUT_SEARCH_SECONDS * TRANSCRIBE_RATE))
    count = (end - first) // frame
    if count <= 0:
        return end
    region = pcm[end - count * frame : end].astype(np.float32).reshape(count, frame)
    quietest = int(np.argmin((region**2).mean(axis=1)))
    return end - (count - quietest - 1) * frame


def wav_header(sample_rate: int, data_bytes: int | None = None) -> bytes:
    """The header of a 16-bit mono WAV; without ``data_bytes``, of one streamed whose
    length is not known yet."""
    data = _UNKNOWN if data_bytes is None else data_bytes
    riff = _UNKNOWN if data_bytes is None else data_bytes + 36
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + (b"data" + struct.pack("<I", data))
    )


def encode(pcm: bytes, sample_rate: int, fmt: str) -> bytes:
    """16-bit mono PCM as a whole ``mp3``, ``flac`` or ``opus`` (in Ogg) file. Blocking."""
    import soundfile

    container, subtype, rates = _ENCODERS[fmt]
    samples = np.frombuffer(pcm, dtype="<i2")
    rate = sample_rate
    if rates and rate not in rates:
        samples, rate = _resample(samples, rate, rates[0]), rates[0]
    out = io.BytesIO()
    soundfile.write(out, samples, rate, format=container, subtype=subtype)
    return out.getvalue()


def _resample(samples: np.ndarray[Any, Any], rate: int, target: int) -> np.ndarray[Any, Any]:
    import soxr

    resampled: np.ndarray[Any, Any] = soxr.resample(
        samples.astype(np.float32) / 32768.0, rate, target
    )
    back: np.ndarray[Any, Any] = (np.clip(resampled, -1.0, 1.0) * 32767).round().astype(np.int16)
    return back


class PcmStream:
    """Speech at any rate in, OpenAI's raw PCM (``PCM_RATE``) out, a chunk at a time."""

    def __init__(self, sample_rate: int) -> None:
        import soxr

        self._stream = soxr.ResampleStream(sample_rate, PCM_RATE, 1, dtype="float32")

    def feed(self, pcm: bytes, last: bool = False) -> bytes:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        out: np.ndarray[Any, Any] = self._stream.resample_chunk(samples, last=last)
        pcm16: bytes = (np.clip(out, -1.0, 1.0) * 32767).round().astype("<i2").tobytes()
        return pcm16
