"""Text-to-speech runners on Hugging Face transformers: VITS (MMS-TTS and kin) and SpeechT5.

Text is spoken a piece at a time (sentences, or shorter runs where a sentence is long), and
each piece's audio is handed on as soon as it is made: the caller hears the first sentence
while the rest are still being made, and a caller that goes away stops the work at the next
piece.

A SpeechT5 model turns text into a spectrogram and needs two more things to be heard:

- a vocoder (``SpeechT5HifiGan``): the ``vocoder/`` folder inside the model's directory,
  else the ``microsoft/speecht5_hifigan`` model found like any other (the Hugging Face
  cache, then the Hub);
- the voices: ``speakers.safetensors`` in the model's directory, one speaker embedding
  (x-vector) per tensor, named after the voice. Without it the model speaks with one
  neutral voice (an all-zero embedding).

Speed is the model's own speaking rate for VITS; for SpeechT5 the spectrogram is stretched
in time before the vocoder, which keeps the pitch.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from node.worker.runners.base import Progress, drop_model
from protocols import AudioChunk, ModelInfo, SpeechParams
from protocols.audio import MAX_CHUNK_BYTES, SAMPLE_BYTES

logger = logging.getLogger(__name__)

PIECE_CHARS = 400
VOCODER_ID = "microsoft/speecht5_hifigan"
SPEAKERS_FILE = "speakers.safetensors"
# After a full stop and a space, or right after an ideographic one; or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|(?<=[\u3002\uff01\uff1f])|\n+")

# Finds a model (the vocoder) by id, as the node finds any model.
Resolve = Callable[[str], Path]


def pieces(text: str, limit: int = PIECE_CHARS) -> list[str]:
    """``text`` cut into sentences, each at most ``limit`` characters (a longer sentence
    is cut at its last space before the limit, else at the limit); blank pieces dropped."""
    found: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        rest = " ".join(sentence.split())
        while len(rest) > limit:
            cut = rest.rfind(" ", 0, limit + 1)
            cut = cut if cut > 0 else limit
            found.append(rest[:cut])
            rest = rest[cut:].lstrip()
        if rest:
            found.append(rest)
    return found


def pcm16(waveform: Any) -> bytes:
    """A float waveform in [-1, 1] (a 1-D tensor) as 16-bit little-endian PCM."""
    import torch

    clipped = torch.clamp(waveform.detach().float().cpu(), -1.0, 1.0)
    return (clipped * 32767.0).round().to(torch.int16).numpy().astype("<i2").tobytes()


def chunks(pcm: bytes, sample_rate: int) -> Iterator[AudioChunk]:
    """``pcm`` in chunks that each fit a frame."""
    step = MAX_CHUNK_BYTES - MAX_CHUNK_BYTES % SAMPLE_BYTES
    for start in range(0, len(pcm), step):
        yield AudioChunk(pcm[start : start + step], sample_rate)


class _Speaker:
    """What both runners share: one call at a time, cancellation between pieces."""

    task = "text-to-speech"

    def __init__(self, model_id: str, model: Any, sample_rate: int, context: int) -> None:
        self._model_id = model_id
        self._model: Any = model
        self.sample_rate = sample_rate
        self._context = context
        # A model's speaking rate is state on the model: one call at a time.
        self._busy = threading.Lock()

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self._model_id, self.task, "float32", self._context, 1, "ready")

    def speak(self, params: SpeechParams, cancelled: threading.Event) -> Iterator[AudioChunk]:
        """Yield each piece's audio as soon as it is made."""
        voice = self._voice(params.voice)
        said = 0
        with self._busy:
            if self._model is None:
                raise RuntimeError(f"{self._model_id} is closed")
            for piece in pieces(params.input, self._piece_limit()):
                if cancelled.is_set():
                    return
                pcm = self._say(piece, voice, params.speed)
                said += len(pcm)
                yield from chunks(pcm, self.sample_rate)
        if not said:
            raise ValueError(f"{self._model_id} can say none of the characters of this input")

    def _piece_limit(self) -> int:
        return PIECE_CHARS

    def _voice(self, voice: str) -> Any:
        raise NotImplementedError

    def _say(self, text: str, voice: Any, speed: float) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        """Drop the model; waits for a call in progress to finish its piece."""
        drop_model(self, self._busy)


class VitsSpeech(_Speaker):
    """A ``VitsModel`` (MMS-TTS and kin). A model with several speakers takes the
    speaker's number as its voice; one with a single speaker speaks any voice asked for."""

    def __init__(self, model_id: str, model: Any, tokenizer: Any) -> None:
        super().__init__(model_id, model, int(model.config.sampling_rate), 0)
        self._tokenizer = tokenizer
        self._speakers = int(getattr(model.config, "num_speakers", 1) or 1)

    @classmethod
    def load(cls, model_id: str, path: Path, device: str, progress: Progress) -> VitsSpeech:
        from transformers import AutoTokenizer, VitsModel

        started = time.monotonic()
        progress(f"loading tokenizer of {model_id}", 0.0)
        tokenizer = AutoTokenizer.from_pretrained(path)
        progress(f"loading weights of {model_id}", 0.2)
        model: Any = VitsModel.from_pretrained(path)
        model.to(device)
        model.eval()
        logger.info("loaded %s on %s in %.1f s", model_id, device, time.monotonic() - started)
        progress(f"{model_id} ready on {device}", 1.0)
        return cls(model_id, model, tokenizer)

    def _voice(self, voice: str) -> int | None:
        if self._speakers <= 1:
            return None
        if voice == "":
            return 0
        if voice.isdigit() and int(voice) < self._speakers:
            return int(voice)
        raise ValueError(
            f"{self._model_id} has {self._speakers} voices, named 0 to {self._speakers - 1}"
        )

    def _say(self, text: str, voice: Any, speed: float) -> bytes:
        import torch

        inputs = self._tokenizer(text, return_tensors="pt").to(self._model.device)
        if inputs["input_ids"].shape[-1] == 0:
            return b""  # nothing the model can pronounce
        self._model.speaking_rate = speed
        with torch.inference_mode():
            waveform = self._model(**inputs, speaker_id=voice).waveform
        return pcm16(waveform[0])


class SpeechT5Speech(_Speaker):
    """``SpeechT5ForTextToSpeech`` with its HiFi-GAN vocoder and named voices."""

    def __init__(
        self, model_id: str, model: Any, processor: Any, vocoder: Any, voices: dict[str, Any]
    ) -> None:
        context = int(getattr(model.config, "max_text_positions", 0) or 0)
        rate = int(getattr(vocoder.config, "sampling_rate", 16_000))
        super().__init__(model_id, model, rate, context)
        self._processor = processor
        self._vocoder = vocoder
        self._voices = voices

    @classmethod
    def load(
        cls, model_id: str, path: Path, device: str, progress: Progress, resolve: Resolve
    ) -> SpeechT5Speech:
        import torch
        from transformers import SpeechT5ForTextToSpeech, SpeechT5HifiGan, SpeechT5Processor

        started = time.monotonic()
        progress(f"loading processor of {model_id}", 0.0)
        processor = SpeechT5Processor.from_pretrained(path)
        progress(f"loading weights of {model_id}", 0.2)
        model: Any = SpeechT5ForTextToSpeech.from_pretrained(path)
        local = path / "vocoder"
        vocoder_path = local if (local / "config.json").is_file() else resolve(VOCODER_ID)
        progress(f"loading vocoder from {vocoder_path}", 0.6)
        vocoder: Any = SpeechT5HifiGan.from_pretrained(vocoder_path)
        size = int(model.config.speaker_embedding_dim)
        voices = _voices(path / SPEAKERS_FILE, size) or {"": torch.zeros(size)}
        model.to(device)
        vocoder.to(device)
        model.eval()
        vocoder.eval()
        logger.info(
            "loaded %s (%d voices) on %s in %.1f s",
            model_id, len(voices), device, time.monotonic() - started,
        )  # fmt: skip
        progress(f"{model_id} ready on {device}", 1.0)
        return cls(model_id, model, processor, vocoder, voices)

    def _piece_limit(self) -> int:
        # Its text positions bound a piece: one per character, and the end of text.
        return min(PIECE_CHARS, self._context - 2) if self._context > 2 else PIECE_CHARS

    def _voice(self, voice: str) -> Any:
        if len(self._voices) == 1:
            return next(iter(self._voices.values()))
        named = {name.casefold(): v for name, v in self._voices.items()}
        if voice.casefold() in named:
            return named[voice.casefold()]
        if voice == "":
            return next(iter(self._voices.values()))
        raise ValueError(f"{self._model_id} has the voices {', '.join(sorted(self._voices))}")

    def _say(self, text: str, voice: Any, speed: float) -> bytes:
        import torch
        from torch.nn.functional import interpolate

        ids = self._processor(text=text, return_tensors="pt")["input_ids"].to(self._model.device)
        if ids.shape[-1] == 0:
            return b""
        with torch.inference_mode():
            embedding = voice.to(self._model.device, self._model.dtype).unsqueeze(0)
            spectrogram = self._model.generate_speech(ids, embedding)
            if speed != 1.0 and spectrogram.shape[0] > 1:
                frames = max(1, round(spectrogram.shape[0] / speed))
                stretched = interpolate(spectrogram.T.unsqueeze(0), size=frames, mode="linear")
                spectrogram = stretched[0].T
            waveform = self._vocoder(spectrogram)
        return pcm16(waveform)

    def close(self) -> None:
        super().close()
        self._vocoder = None


def _voices(file: Path, size: int) -> dict[str, Any]:
    """The named speaker embeddings in ``file`` (each a vector of ``size``), if it exists."""
    if not file.is_file():
        return {}
    from safetensors.torch import load_file

    voices = {name: t.flatten().float() for name, t in load_file(str(file)).items()}
    wrong = sorted(name for name, t in voices.items() if t.numel() != size)
    if wrong:
        raise ValueError(f"{file}: voices {', '.join(wrong)} are not vectors of {size} numbers")
    return voices
