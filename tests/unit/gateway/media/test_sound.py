"""Audio files decoded into the swarm's PCM, cut into windows, and speech encoded."""

from __future__ import annotations

import io
import itertools
import struct

import numpy as np
import pytest
import soundfile

from gateway.media import BadMedia
from gateway.media.sound import (
    PCM_RATE,
    PcmStream,
    decode_audio,
    encode,
    wav_header,
    windows,
)
from protocols.audio import TRANSCRIBE_RATE, WINDOW_SECONDS


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def audio_file(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, samples, rate, format=fmt, subtype=subtype)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "subtype"),
    [("WAV", "PCM_16"), ("FLAC", None), ("MP3", None), ("OGG", "VORBIS"), ("OGG", "OPUS")],
)
def test_every_common_format_becomes_mono_pcm_at_the_transcription_rate(
    fmt: str, subtype: str | None
) -> None:
    data = audio_file(tone(2.0, 48_000, channels=2), 48_000, fmt, subtype)
    decoded = decode_audio(data, max_seconds=10)
    assert decoded.pcm.dtype == np.int16
    assert decoded.seconds == pytest.approx(2.0, abs=0.08)  # encoders pad a little
    assert np.abs(decoded.pcm).max() > 8000  # the tone survived the mixing and resampling


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "not audio"),
        (b"just some text, not audio at all" * 20, "not audio"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "not audio"),
        (audio_file(np.zeros(0, np.float32), 16_000, "WAV"), "empty"),
    ],
)
def test_what_is_not_audio_is_refused_with_why(data: bytes, why: str) -> None:
    with pytest.raises(BadMedia, match=why):
        decode_audio(data, max_seconds=10)


def test_audio_longer_than_the_limit_is_refused_before_it_is_all_decoded() -> None:
    data = audio_file(tone(12, 8_000), 8_000, "FLAC")
    with pytest.raises(BadMedia, match="longer than 10 seconds"):
        decode_audio(data, max_seconds=10)
    assert decode_audio(data, max_seconds=12).seconds == pytest.approx(12)


def test_a_wav_that_lies_about_its_length_reads_what_is_there() -> None:
    pcm = (tone(1.0, 16_000) * 32767).astype("<i2").tobytes()
    decoded = decode_audio(wav_header(16_000) + pcm, max_seconds=10)
    assert decoded.seconds == pytest.approx(1.0)


def test_long_audio_is_cut_into_windows_at_quiet_moments() -> None:
    rate = TRANSCRIBE_RATE
    wave = tone(70, rate)
    wave[int(27.0 * rate) : int(27.3 * rate)] = 0  # a pause near the end of the first window
    cut = list(windows(decode_audio(audio_file(wave, rate, "WAV", "PCM_16"), 100)))
    starts = [start for start, _ in cut]
    lengths = [len(pcm) / 2 / rate for _, pcm in cut]
    assert 27.0 <= starts[1] <= 27.3
    assert all(length <= WINDOW_SECONDS for length in lengths)
    assert sum(lengths) == pytest.approx(70)
    assert all(b > a for a, b in itertools.pairwise(starts))


def test_a_short_file_is_one_window() -> None:
    [(start, pcm)] = windows(decode_audio(audio_file(tone(3, 8_000), 8_000, "WAV"), 10))
    assert start == 0.0 and len(pcm) == 3 * TRANSCRIBE_RATE * 2


def test_wav_headers() -> None:
    streamed = wav_header(22_050)
    assert len(streamed) == 44 and streamed[:4] == b"RIFF" and streamed[8:16] == b"WAVEfmt "
    assert struct.unpack("<I", streamed[40:44])[0] == 0xFFFFFFFF
    assert struct.unpack("<I", streamed[24:28])[0] == 22_050
    sized = wav_header(16_000, 320)
    assert struct.unpack("<II", sized[4:8] + sized[40:44]) == (356, 320)
    samples, rate = soundfile.read(io.BytesIO(sized + b"\x00" * 320))
    assert (len(samples), rate) == (160, 16_000)


@pytest.mark.parametrize(("fmt", "container"), [("mp3", "MP3"), ("flac", "FLAC"), ("opus", "OGG")])
@pytest.mark.parametrize("rate", [16_000, 22_050])
def test_speech_encodes_at_rates_each_encoder_takes(fmt: str, container: str, rate: int) -> None:
    pcm = (tone(0.5, rate) * 32767).astype("<i2").tobytes()
    info = soundfile.info(io.BytesIO(encode(pcm, rate, fmt)))
    assert info.format == container
    assert info.duration == pytest.approx(0.5, abs=0.1)


def test_raw_pcm_goes_out_at_openais_rate_a_chunk_at_a_time() -> None:
    stream = PcmStream(16_000)
    pcm = (tone(1.0, 16_000) * 32767).astype("<i2").tobytes()
    out = stream.feed(pcm[:16_000]) + stream.feed(pcm[16_000:]) + stream.feed(b"", last=True)
    assert len(out) / 2 == pytest.approx(PCM_RATE, abs=2)
