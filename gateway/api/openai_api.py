"""The OpenAI-compatible request and response shapes the gateway speaks."""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from node.p2p.logs import current_request_id
from protocols import CallPart, TokenLogprob, Tool, ToolCall
from protocols.answer import MAX_TOP_LOGPROBS
from protocols.generation import MAX_CHOICES, MAX_NEW_TOKENS

# Names the node that answered (or "cache"), on every inference answer.
NODE_HEADER = "X-BitingLip-Node"


class ContentPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageUrl(BaseModel):
    model_config = ConfigDict(extra="allow")

    # A data URL (data:image/png;base64,...), or http(s) where the gateway fetches.
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageUrl | str

    @property
    def url(self) -> str:
        return self.image_url if isinstance(self.image_url, str) else self.image_url.url


class FunctionCallIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(max_length=100_000)


class ToolCallIn(BaseModel):
    """A call an assistant made earlier in the conversation."""

    id: str = Field(max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    # Before ``content``: its check reads them.
    tool_calls: list[ToolCallIn] | None = Field(default=None, max_length=128)
    tool_call_id: str | None = Field(default=None, max_length=256)
    # None only for an assistant message that calls tools.
    content: str | list[Annotated[ContentPart | ImagePart, Field(discriminator="type")]] | None = (
        Field(default=None, validate_default=True)
    )

    @field_validator("content")
    @classmethod
    def _content_present(cls, content: Any, info: ValidationInfo) -> Any:
        if content is None and not (
            info.data.get("role") == "assistant" and info.data.get("tool_calls")
        ):
            raise ValueError("required (only an assistant message that calls tools may omit it)")
        return content

    def text(self) -> str:
        """The message's text, without its pictures."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part.text for part in self.content if isinstance(part, ContentPart))

    def pictures(self) -> list[ImagePart]:
        return (
            []
            if self.content is None or isinstance(self.content, str)
            else [part for part in self.content if isinstance(part, ImagePart)]
        )


class FunctionDef(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=10_000)
    parameters: dict[str, Any] = Field(default_factory=dict)
    strict: bool | None = None


class ToolIn(BaseModel):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


# Older OpenAI fields this API does not take, and what to send instead: refused, never
# silently dropped.
REPLACED_FIELDS = {"functions": "tools", "function_call": "tool_choice"}


class StreamOptions(BaseModel):
    include_usage: bool = False


class GenerationRequest(BaseModel):
    """What chat and legacy completions share: the model, sampling and streaming."""

    # Clients send fields that change nothing here (user, metadata, ...): accept them.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    # Unset: the model's own defaults (its generation config), as vLLM does.
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    # Choices: the plan's max_choices bounds them further.
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: StreamOptions | None = None

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def sampling(self) -> dict[str, Any]:
        """The ``GenerateParams`` fields this request sets the same way on every route."""
        return {
            "model": self.model,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": self.stops(),
            "seed": self.seed,
            "stream": self.stream,
        }

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=1024)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS)
    tools: list[ToolIn] | None = Field(default=None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    def extras(self) -> dict[str, Any]:
        """The ``GenerateParams`` fields for tools, response format and logprobs."""
        choice = self.tool_choice or "auto"
        named = isinstance(choice, NamedToolChoice)
        format_ = self.response_format or ResponseFormat(type="text")
        if format_.type == "json_schema" and format_.json_schema is None:
            raise ValueError("response_format: json_schema needs a json_schema object")
        return {
            "tools": [
                Tool(t.function.name, t.function.description, t.function.parameters)
                for t in self.tools or []
            ],
            "tool_choice": "function" if named else choice,
            "tool_name": choice.function.name if isinstance(choice, NamedToolChoice) else None,
            "parallel_tool_calls": self.parallel_tool_calls,
            "response_format": format_.type,
            "json_schema": format_.json_schema.schema_ if format_.json_schema else None,
            "logprobs": self.logprobs,
            "top_logprobs": self.top_logprobs or 0,
        }

    def replaced(self) -> str | None:
        """The first field sent that this API takes under another name, if any."""
        return next((f for f in REPLACED_FIELDS if f in (self.model_extra or {})), None)


class CompletionRequest(GenerationRequest):
    """The legacy ``/v1/completions`` request: one raw prompt, no chat template."""

    prompt: str | list[str]
    max_tokens: int = Field(default=16, ge=1, le=MAX_NEW_TOKENS)
    echo: bool = False
    # The legacy shape: how many of the likeliest tokens to list at each position.
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    def text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise ValueError("prompt: give one prompt (batches of prompts are not supported)")
        return self.prompt[0]


def text_completion(
    id_: str,
    model: str,
    text: str,
    finish_reason: str | None,
    usage_: dict[str, int] | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    choice = {"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish_reason}
    body: dict[str, Any] = {
        "id": id_,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }
    if usage_ is not None:
        body["usage"] = usage_
    return body


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def chat_completion(
    id_: str,
    model: str,
    message: dict[str, Any],
    finish_reason: str,
    usage_: dict[str, int],
    created: int | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": id_,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant"} | message,
                "logprobs": logprobs,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage_,
    }


def assistant_message(text: str, calls: list[ToolCall]) -> dict[str, Any]:
    """An answer's message: its text (None when it only calls tools) and its calls."""
    if not calls:
        return {"content": text}
    return {"content": text if text.strip() else None, "tool_calls": tool_calls(calls)}


def tool_call_deltas(part: CallPart) -> list[dict[str, Any]]:
    """A call's part as OpenAI streams it: a call's start is its index, id, type and name
    with empty arguments; each stretch of arguments is the index and that text."""
    deltas: list[dict[str, Any]] = []
    if part.id is not None:
        function = {"name": part.name, "arguments": ""}
        deltas.append(
            {"index": part.index, "id": part.id, "type": "function", "function": function}
        )
    if part.arguments:
        deltas.append({"index": part.index, "function": {"arguments": part.arguments}})
    return deltas


def tool_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {
            "index": i,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for i, call in enumerate(calls)
    ]


# What a JSON body says for a token the model rules out (JSON has no -Infinity), as vLLM.
FLOOR_LOGPROB = -9999.0


def _finite(logprob: float) -> float:
    return max(logprob, FLOOR_LOGPROB)


def _token(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": _finite(logprob), "bytes": list(token.encode())}


def chat_logprobs(logprobs: list[TokenLogprob]) -> dict[str, Any]:
    """``choices[].logprobs`` of a chat answer (or chunk)."""
    return {
        "content": [
            _token(lp.token, lp.logprob) | {"top_logprobs": [_token(t, v) for t, v in lp.top]}
            for lp in logprobs
        ],
        "refusal": None,
    }


def text_logprobs(logprobs: list[TokenLogprob], offset: int) -> dict[str, Any]:
    """``choices[].logprobs`` of a legacy completion, its first token at ``offset``."""
    offsets: list[int] = []
    for lp in logprobs:
        offsets.append(offset)
        offset += len(lp.token)
    return {
        "tokens": [lp.token for lp in logprobs],
        "token_logprobs": [_finite(lp.logprob) for lp in logprobs],
        "top_logprobs": [{t: _finite(v) for t, v in lp.top} for lp in logprobs],
        "text_offset": offsets,
    }


def chunk(
    id_: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    usage_: dict[str, int] | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
    body: dict[str, Any] = {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [] if usage_ is not None else [choice],
    }
    if usage_ is not None:
        body["usage"] = usage_
    return body


def sse(event: dict[str, Any] | str) -> bytes:
    """One server-sent event: ``data: <json>`` and a blank line."""
    data = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error shape, plus the call's request id (clients ignore fields they do not
    know; a person quoting the body quotes the id)."""
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "server_error"),
            "param": param,
            "code": code,
            "request_id": current_request_id(),
        }
    }
