"""Parameters of generation calls (text and images), as they travel from gateway to node.

Speech and vision calls have their own, in ``protocols.audio`` and ``protocols.vision``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Self

from protocols.errors import RemoteProtocolError
from protocols.validate import exact, finite, required

ROLES = ("system", "user", "assistant")
MAX_PROMPT_CHARS = 200_000
MAX_NEW_TOKENS = 8192
MAX_STOP_SEQUENCES = 4
MAX_IMAGES = 4
MAX_IMAGE_PROMPT_CHARS = 4000
# 1024x1024 keeps even an incompressible RGB PNG (~3.2 MB) inside one 4 MiB RPC frame.
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE, IMAGE_SIDE_STEP = 64, 1024, 8
MAX_IMAGE_STEPS = 100
MAX_GUIDANCE = 30.0
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class PeerParams:
    """What every kind of call parameters shares: a plain map on the wire, checked on arrival."""

    _WHAT: ClassVar[str]  # how a refusal names the parameters

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ValueError(problem)

    def _problem(self) -> str | None:
        """What is wrong with these parameters, in a sentence; None when nothing is."""
        return None

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Self:
        """Parse and validate parameters sent by a peer."""
        try:
            return cls._parse(exact(body, dict, "params"))
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise RemoteProtocolError(f"bad {cls._WHAT} params: {exc}") from exc

    @classmethod
    def _parse(cls, body: dict[str, Any]) -> Self:
        raise NotImplementedError


@dataclass(frozen=True)
class GenerateParams(PeerParams):
    """One generation: either chat ``messages`` or a raw ``prompt``."""

    _WHAT = "generate"

    model: str
    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    max_tokens: int = 256
    # None: the model's own default (its generation config), as its authors meant it to run.
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    # False: the caller wants the whole answer at once; the node sends it in the end frame,
    # one frame instead of one per burst of tokens.
    stream: bool = True

    def _problem(self) -> str | None:
        if (self.messages is None) == (self.prompt is None):
            return "give exactly one of messages or prompt"
        if self.messages is not None:
            if not self.messages:
                return "messages must not be empty"
            if any(m.role not in ROLES for m in self.messages):
                return f"message roles must be one of {', '.join(ROLES)}"
        if self.prompt_chars() > MAX_PROMPT_CHARS:
            return f"prompt is longer than {MAX_PROMPT_CHARS} characters"
        return sampling_problem(self.max_tokens, self.temperature, self.top_p, self.stop)

    def prompt_chars(self) -> int:
        if self.messages is not None:
            return sum(len(m.content) for m in self.messages)
        return len(self.prompt or "")

    @classmethod
    def _parse(cls, body: dict[str, Any]) -> Self:
        messages = body.get("messages")
        return cls(
            model=required(body, "model", str),
            messages=None
            if messages is None
            else [
                ChatMessage(required(m, "role", str), required(m, "content", str))
                for m in (exact(m, dict, "message") for m in exact(messages, list, "messages"))
            ],
            prompt=None if body.get("prompt") is None else exact(body.get("prompt"), str, "prompt"),
            max_tokens=required(body, "max_tokens", int),
            temperature=optional_number(body, "temperature"),
            top_p=optional_number(body, "top_p"),
            stop=[exact(s, str, "stop") for s in required(body, "stop", list)],
            seed=None if body.get("seed") is None else exact(body.get("seed"), int, "seed"),
            stream=True if body.get("stream") is None else exact(body["stream"], bool, "stream"),
        )


def sampling_problem(
    max_tokens: int, temperature: float | None, top_p: float | None, stop: list[str]
) -> str | None:
    """Why these sampling settings cannot be used, or ``None`` if they can."""
    if not 1 <= max_tokens <= MAX_NEW_TOKENS:
        return f"max_tokens must be between 1 and {MAX_NEW_TOKENS}"
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        return "temperature must be between 0 and 2"
    if top_p is not None and not 0.0 < top_p <= 1.0:
        return "top_p must be in (0, 1]"
    if len(stop) > MAX_STOP_SEQUENCES or any(not s for s in stop):
        return f"stop takes at most {MAX_STOP_SEQUENCES} non-empty strings"
    return None


def optional_number(body: dict[str, Any], name: str) -> float | None:
    """``body[name]`` as a finite number, or ``None`` where it is unset."""
    value = body.get(name)
    return None if value is None else finite(value, name)


@dataclass(frozen=True)
class ImageParams(PeerParams):
    """One text-to-image call: ``n`` images of ``width`` x ``height`` from ``prompt``."""

    _WHAT = "image"

    model: str
    prompt: str
    n: int = 1
    width: int = 512
    height: int = 512
    steps: int = 30
    guidance: float = 7.5
    seed: int | None = None
    # What the images should not show; empty: nothing in particular.
    negative_prompt: str = ""

    def _problem(self) -> str | None:
        if not self.prompt:
            return "prompt must not be empty"
        for name, text in (("prompt", self.prompt), ("negative_prompt", self.negative_prompt)):
            if len(text) > MAX_IMAGE_PROMPT_CHARS:
                return f"{name} is longer than {MAX_IMAGE_PROMPT_CHARS} characters"
        if not 1 <= self.n <= MAX_IMAGES:
            return f"n must be between 1 and {MAX_IMAGES}"
        for name, side in (("width", self.width), ("height", self.height)):
            if (why := side_problem(side)) is not None:
                return f"{name} {why}"
        if not 1 <= self.steps <= MAX_IMAGE_STEPS:
            return f"steps must be between 1 and {MAX_IMAGE_STEPS}"
        if not 0.0 <= self.guidance <= MAX_GUIDANCE:
            return f"guidance must be between 0 and {MAX_GUIDANCE:g}"
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            return f"seed must be between 0 and {MAX_SEED}"
        return None

    @classmethod
    def _parse(cls, body: dict[str, Any]) -> Self:
        return cls(
            model=required(body, "model", str),
            prompt=required(body, "prompt", str),
            n=required(body, "n", int),
            width=required(body, "width", int),
            height=required(body, "height", int),
            steps=required(body, "steps", int),
            guidance=finite(body.get("guidance"), "guidance"),
            seed=None if body.get("seed") is None else exact(body.get("seed"), int, "seed"),
            # Absent from a gateway older than the field.
            negative_prompt=exact(body.get("negative_prompt", ""), str, "negative_prompt"),
        )


def side_problem(side: int) -> str | None:
    """Why ``side`` cannot be an image's width or height, or ``None`` if it can."""
    if not MIN_IMAGE_SIDE <= side <= MAX_IMAGE_SIDE or side % IMAGE_SIDE_STEP:
        return (
            f"must be a multiple of {IMAGE_SIDE_STEP} between {MIN_IMAGE_SIDE} and {MAX_IMAGE_SIDE}"
        )
    return None
