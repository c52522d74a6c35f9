"""The REPL's speech and picture commands: ``/say``, ``/listen`` and ``/look``.

Each uses the first model the swarm serves for its task. ``/say`` saves a WAV file where
``/image`` saves its pictures; the others show what the model made of a file.
"""

from __future__ import annotations

import mimetypes
import struct
import time
from pathlib import Path

from gateway.client.api_client import (
    EMBEDDING_TASK,
    LISTEN_TASK,
    SPEECH_TASK,
    VISION_TASK,
    GatewayClient,
)
from gateway.client.repl_render import Screen

# name -> (arguments, what it does), as the REPL's ``COMMANDS``.
MEDIA_COMMANDS: dict[str, tuple[str, str]] = {
    "say": ("TEXT", "speak TEXT with a text-to-speech model and save it as a WAV file"),
    "listen": ("FILE", "write down what is said in an audio file (WAV, FLAC, MP3, OGG)"),
    "look": ("IMAGE [PROMPT]", "ask an image-to-text model about a picture (PNG, JPEG, WebP, GIF)"),
}
# What a model of each task does instead of chatting, and the command that uses it.
MEDIA_TASKS = {
    SPEECH_TASK: "speaks (/say)",
    LISTEN_TASK: "writes down speech (/listen)",
    VISION_TASK: "reads pictures (/look)",
    EMBEDDING_TASK: "makes embeddings (POST /v1/embeddings)",
}
LOOK_PROMPT = "Describe this picture."
_UNKNOWN = 0xFFFFFFFF


class MediaCommands:
    """``cmd_say``, ``cmd_listen`` and ``cmd_look``, mixed into the REPL's commands."""

    client: GatewayClient
    screen: Screen

    @property
    def save_dir(self) -> Path:
        """Where ``/say`` saves."""
        raise NotImplementedError

    def cmd_say(self, arg: str) -> None:
        if not arg:
            self.screen.error("use /say TEXT")
            return
        model = self._model_for(SPEECH_TASK, "a text-to-speech model")
        if model is None:
            return
        self.screen.note(f"speaking with {model}…")
        audio = sized_wav(self.client.speech(model, arg))
        try:
            path = new_file(self.save_dir, "speech", ".wav")
            path.write_bytes(audio)
        except OSError as exc:
            self.screen.error(f"cannot save the speech in {self.save_dir}: {exc}")
            return
        self.screen.say(f"saved {path}")

    def cmd_listen(self, arg: str) -> None:
        if not arg:
            self.screen.error("use /listen FILE")
            return
        audio = self._read(Path(arg).expanduser())
        model = self._model_for(LISTEN_TASK, "a speech-to-text model") if audio else None
        if audio is None or model is None:
            return
        self.screen.note(f"listening with {model}…")
        self.screen.say(self.client.transcribe(model, Path(arg).name, audio) or "(nothing heard)")

    def cmd_look(self, arg: str) -> None:
        name, _, prompt = arg.partition(" ")
        if not name:
            self.screen.error("use /look IMAGE [PROMPT]")
            return
        path = Path(name).expanduser()
        picture = self._read(path)
        model = self._model_for(VISION_TASK, "an image-to-text model") if picture else None
        if picture is None or model is None:
            return
        mime = mimetypes.guess_type(path.name)[0] or "image/png"
        self.screen.note(f"looking with {model}…")
        self.screen.say(self.client.look(model, picture, mime, prompt.strip() or LOOK_PROMPT))

    def _model_for(self, task: str, what: str) -> str | None:
        found = self.client.models_for(task)
        if not found:
            self.screen.error(f"no node serves {what} now")
            return None
        return found[0]

    def _read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except OSError as exc:
            self.screen.error(f"cannot read {path}: {exc.strerror or exc}")
            return None


def sized_wav(data: bytes) -> bytes:
    """A streamed WAV (its lengths left unknown in the header) with the lengths filled in,
    as players and editors expect of a file; any other data unchanged."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    fixed = bytearray(data)
    if struct.unpack_from("<I", fixed, 4)[0] == _UNKNOWN:
        struct.pack_into("<I", fixed, 4, len(fixed) - 8)
    at = 12
    while at + 8 <= len(fixed):
        chunk, size = bytes(fixed[at : at + 4]), struct.unpack_from("<I", fixed, at + 4)[0]
        if chunk == b"data":
            if size == _UNKNOWN:
                struct.pack_into("<I", fixed, at + 4, len(fixed) - at - 8)
            break
        at += 8 + size + size % 2
    return bytes(fixed)


def new_file(directory: Path, stem: str, suffix: str) -> Path:
    """A fresh file name in ``directory``, created empty so no other writer takes it."""
    directory.mkdir(parents=True, exist_ok=True)
    base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 1000):
        path = directory / f"{base}{'' if n == 1 else f'-{n}'}{suffix}"
        try:
            path.open("x").close()
        except FileExistsError:
            continue
        return path
    raise OSError(f"too many files named {base}* already")
