"""Parameters of image-to-text calls (a chat that shows the model pictures), as they travel
from gateway to node.

A message's content is a list of parts in order: a string is text, an integer is the index
of one of the call's ``images``. Each image is referenced exactly once, in order, so a
message list and its images cannot disagree. Images travel as PNG or JPEG bytes that the
gateway decoded, checked and re-encoded; a node still opens them with the same caps, as
it does any peer input. The answer streams as text, exactly as a text generation's does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Self

from protocols.generation import (
    MAX_PROMPT_CHARS,
    ROLES,
    PeerParams,
    optional_number,
    sampling_problem,
)
from protocols.validate import exact, required

MAX_VISION_IMAGES = 8
# The longest side of an image as it travels; the gateway scales larger ones down.
MAX_VISION_SIDE = 1024
# Every image of a call together, inside one 4 MiB RPC frame beside the text.
MAX_VISION_BYTES = 3 << 20
MAX_VISION_MESSAGES = 1024

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"

Part = str | int


def image_format(data: bytes) -> str | None:
    """``"PNG"`` or ``"JPEG"`` by the file's signature, else ``None``."""
    if data.startswith(_PNG):
        return "PNG"
    if data.startswith(_JPEG):
        return "JPEG"
    return None


@dataclass(frozen=True)
class VisionMessage:
    role: str
    content: list[Part]

    @property
    def text(self) -> str:
        return "".join(p for p in self.content if isinstance(p, str))


@dataclass(frozen=True)
class VisionParams(PeerParams):
    """One chat with pictures: ``messages`` whose parts point into ``images``."""

    _WHAT = "vision"

    model: str
    messages: list[VisionMessage]
    images: list[bytes] = field(default_factory=list)
    max_tokens: int = 256
    temperature: float | None = None  # None: the model's own default
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    stream: bool = True

    def _problem(self) -> str | None:
        if not self.messages:
            return "messages must not be empty"
        if len(self.messages) > MAX_VISION_MESSAGES:
            return f"at most {MAX_VISION_MESSAGES} messages"
        if any(m.role not in ROLES for m in self.messages):
            return f"message roles must be one of {', '.join(ROLES)}"
        if sum(len(m.text) for m in self.messages) > MAX_PROMPT_CHARS:
            return f"prompt is longer than {MAX_PROMPT_CHARS} characters"
        if len(self.images) > MAX_VISION_IMAGES:
            return f"at most {MAX_VISION_IMAGES} images in one call"
        if sum(len(i) for i in self.images) > MAX_VISION_BYTES:
            return f"the images are over {MAX_VISION_BYTES} bytes together"
        if any(image_format(i) is None for i in self.images):
            return "every image must be PNG or JPEG"
        shown = [p for m in self.messages for p in m.content if not isinstance(p, str)]
        if shown != list(range(len(self.images))):
            return "every image must be shown once, in order"
        return sampling_problem(self.max_tokens, self.temperature, self.top_p, self.stop)

    @classmethod
    def _parse(cls, body: dict[str, Any]) -> Self:
        seed = body.get("seed")
        return cls(
            model=required(body, "model", str),
            messages=[
                VisionMessage(
                    required(m, "role", str),
                    [_part(p) for p in required(m, "content", list)],
                )
                for m in (exact(m, dict, "message") for m in required(body, "messages", list))
            ],
            images=[exact(i, bytes, "image") for i in required(body, "images", list)],
            max_tokens=required(body, "max_tokens", int),
            temperature=optional_number(body, "temperature"),
            top_p=optional_number(body, "top_p"),
            stop=[exact(s, str, "stop") for s in required(body, "stop", list)],
            seed=None if seed is None else exact(seed, int, "seed"),
            stream=required(body, "stream", bool),
        )


def _part(value: Any) -> Part:
    if isinstance(value, str):
        return value
    return exact(value, int, "content part")
