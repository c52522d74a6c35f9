"""Parameters of generation calls (text and images), as they travel from gateway to node.

Speech and vision calls have their own, in ``protocols.audio`` and ``protocols.vision``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Self

from protocols.answer import MAX_TOP_LOGPROBS
from protocols.errors import RemoteProtocolError
from protocols.tools import Tool, ToolCall, tools_problem
from protocols.validate import exact, finite, required

ROLES = ("system", "user", "assistant", "tool")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
MAX_PROMPT_CHARS = 200_000
MAX_NEW_TOKENS = 8192
MAX_STOP_SEQUENCES = 4
MAX_IMAGES = 4
MAX_IMAGE_PROMPT_CHARS = 4000
# 1024x1024 keeps even an incompressible RGB PNG (~3.2 MB) inside one 4 MiB RPC frame.
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE, IMAGE_SIDE_STEP = 64, 1024, 8
MAX_IMAGE_STEPS = 100
# The most steps a scheduler may turn MAX_IMAGE_STEPS into (second-order ones take two each).
MAX_SCHEDULED_STEPS = 2 * MAX_IMAGE_STEPS
MAX_GUIDANCE = 30.0
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)  # an assistant's calls
    tool_call_id: str | None = None  # a tool's answer: to which call

    def template_form(self) -> dict[str, Any]:
        """The message as chat templates take it: OpenAI's shape, arguments parsed (the
        templates of Qwen, Llama and Mistral render them as a JSON object)."""
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": _arguments(call.arguments)},
                }
                for call in self.tool_calls
            ]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message

    @classmethod
    def from_wire(cls, body: Any) -> ChatMessage:
        body = exact(body, dict, "message")
        call_id = body.get("tool_call_id")
        return cls(
            required(body, "role", str),
            required(body, "content", str),
            [ToolCall.from_wire(c) for c in exact(body.get("tool_calls", []), list, "tool_calls")],
            None if call_id is None else exact(call_id, str, "tool_call_id"),
        )


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # as the caller wrote it: the template shows it verbatim


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
    # Tools the model may call (chat only); tool_name is the function tool_choice names.
    tools: list[Tool] = field(default_factory=list)
    tool_choice: str = "auto"
    tool_name: str | None = None
    parallel_tool_calls: bool = True
    # "json_object" or "json_schema" (with json_schema set): the answer is constrained to it.
    response_format: str = "text"
    json_schema: dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int = 0

    def _problem(self) -> str | None:
        if (self.messages is None) == (self.prompt is None):
            return "give exactly one of messages or prompt"
        if self.messages is not None:
            if not self.messages:
                return "messages must not be empty"
            if any(m.role not in ROLES for m in self.messages):
                return f"message roles must be one of {', '.join(ROLES)}"
        elif self.tools:
            return "tools: only chat calls take tools"
        if self.prompt_chars() > MAX_PROMPT_CHARS:
            return f"prompt is longer than {MAX_PROMPT_CHARS} characters"
        return (
            tools_problem(self.tools, self.tool_choice, self.tool_name)
            or self._format_problem()
            or sampling_problem(self.max_tokens, self.temperature, self.top_p, self.stop)
        )

    def _format_problem(self) -> str | None:
        if self.response_format not in RESPONSE_FORMATS:
            return f"response_format must be one of {', '.join(RESPONSE_FORMATS)}"
        if (self.response_format == "json_schema") != (self.json_schema is not None):
            return "response_format: json_schema goes with a schema, and only there"
        if self.response_format != "text" and self.tool_choice in ("required", "function"):
            return "response_format: a JSON answer and a forced tool call exclude each other"
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            return f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}"
        if self.top_logprobs and not self.logprobs:
            return "top_logprobs needs logprobs"
        return None

    def prompt_chars(self) -> int:
        """Characters of the prompt, tool definitions and schema included (they are all
        rendered into the prompt or compiled into a grammar)."""
        extra = len(json.dumps([asdict(t) for t in self.tools])) if self.tools else 0
        if self.json_schema is not None:
            extra += len(json.dumps(self.json_schema))
        if self.messages is not None:
            return extra + sum(
                len(m.content) + sum(len(c.arguments) + len(c.name) for c in m.tool_calls)
                for m in self.messages
            )
        return extra + len(self.prompt or "")

    def engine_field(self) -> str | None:
        """The first field set that only a model on a node's own batch engine can honour
        (tools, a JSON answer, logprobs); ``None`` when none is."""
        if self.tools:
            return "tools"
        if self.response_format != "text":
            return "response_format"
        return "logprobs" if self.logprobs else None

    @property
    def constrained(self) -> bool:
        """Whether the node must constrain decoding (a JSON answer, or a forced call)."""
        return self.response_format != "text" or self.tool_choice in ("required", "function")

    @classmethod
    def _parse(cls, body: dict[str, Any]) -> Self:
        messages = body.get("messages")
        schema = body.get("json_schema")
        name = body.get("tool_name")
        return cls(
            model=required(body, "model", str),
            messages=None
            if messages is None
            else [ChatMessage.from_wire(m) for m in exact(messages, list, "messages")],
            prompt=None if body.get("prompt") is None else exact(body.get("prompt"), str, "prompt"),
            max_tokens=required(body, "max_tokens", int),
            temperature=optional_number(body, "temperature"),
            top_p=optional_number(body, "top_p"),
            stop=[exact(s, str, "stop") for s in required(body, "stop", list)],
            seed=None if body.get("seed") is None else exact(body.get("seed"), int, "seed"),
            stream=True if body.get("stream") is None else exact(body["stream"], bool, "stream"),
            tools=[Tool.from_wire(t) for t in exact(body.get("tools", []), list, "tools")],
            tool_choice=exact(body.get("tool_choice", "auto"), str, "tool_choice"),
            tool_name=None if name is None else exact(name, str, "tool_name"),
            parallel_tool_calls=exact(
                body.get("parallel_tool_calls", True), bool, "parallel_tool_calls"
            ),
            response_format=exact(body.get("response_format", "text"), str, "response_format"),
            json_schema=None if schema is None else exact(schema, dict, "json_schema"),
            logprobs=exact(body.get("logprobs", False), bool, "logprobs"),
            top_logprobs=exact(body.get("top_logprobs", 0), int, "top_logprobs"),
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
    # True: the node sends an ``ImageStep`` chunk after each denoising step, before the images.
    progress: bool = False

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
            progress=exact(body.get("progress", False), bool, "progress"),
        )


@dataclass(frozen=True)
class ImageStep:
    """A denoising step done: ``step`` of ``steps``. Some schedulers take more steps than the
    call asked for (Heun's, two a step), so ``steps`` may exceed ``ImageParams.steps``."""

    step: int
    steps: int

    def __post_init__(self) -> None:
        if not 1 <= self.step <= self.steps <= MAX_SCHEDULED_STEPS:
            raise ValueError(f"step {self.step} of {self.steps} is out of range")

    def to_wire(self) -> dict[str, Any]:
        return {"step": self.step, "steps": self.steps}

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> ImageStep:
        """Parse a step chunk sent by a node."""
        try:
            return cls(required(body, "step", int), required(body, "steps", int))
        except ValueError as exc:
            raise RemoteProtocolError(f"bad image step: {exc}") from exc


def side_problem(side: int) -> str | None:
    """Why ``side`` cannot be an image's width or height, or ``None`` if it can."""
    if not MIN_IMAGE_SIDE <= side <= MAX_IMAGE_SIDE or side % IMAGE_SIDE_STEP:
        return (
            f"must be a multiple of {IMAGE_SIDE_STEP} between {MIN_IMAGE_SIDE} and {MAX_IMAGE_SIDE}"
        )
    return None
