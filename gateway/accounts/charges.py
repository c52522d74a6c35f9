"""What a text call may use and what it is charged, from the request and what was forwarded.

A node's token counts are peer input. The gateway knows the request (the prompt's size,
``max_tokens``, the stop sequences) and the text it forwarded to the caller, and bounds
the node's counts by them: never negative, never more completion tokens than were asked
for or than the forwarded text can hold, never more prompt tokens than the prompt can
make. Where a node said nothing, the same facts give an estimate.

A chat's prompt is more than its messages' text: the tools a template lists (Llama 3.1's
indents their JSON), the instructions it adds when there are tools, the calls earlier
answers made (their names, arguments and ids) and the ids tool answers quote. A JSON
schema is compiled into a grammar, not rendered, on a node's own engine; an external
engine may render it, so the bound leaves room for it.

A call that ended early (the caller hung up, the node failed mid-answer) is charged for
what was forwarded: a node sends its counts so far with every chunk.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocols import ChatMessage, EmbedParams, GenerateParams
from protocols.vision import VisionParams

# Tokens a chat template may add around the messages: role markers per message, and a
# default system prompt some templates insert.
TEMPLATE_TOKENS = 256
MESSAGE_TOKENS = 16
# What a template adds when tools are offered: Qwen's and Llama 3.1's instructions on how to
# call run to about 600 bytes; an estimate of those tokens and a bound.
TOOLS_TOKENS_ESTIMATE = 256
TOOLS_TOKENS = 1024
# The JSON around one earlier call's name and arguments, and a tool answer's frame.
CALL_TOKENS = 32
# Llama 3.1 renders tools with tojson(indent=4): the widest form a template gives them.
TOOLS_INDENT = 4
# Tokens that leave no text in the answer: end of text, a partial character held back.
SILENT_TOKENS = 16
# English runs ~4 bytes a token and CJK ~3: 3 overestimates, and the estimate is only
# reserved (or charged where a node gave no counts).
BYTES_PER_TOKEN = 3
# Tokens an embedding model's tokenizer may add to each text: [CLS] and [SEP], a prefix.
EMBED_SPECIAL_TOKENS = 8
# Tokens one picture may take in a vision model's prompt (LLaVA's 576 patches, with room).
IMAGE_TOKENS = 2048

# What a text call asks for: plain text, or a chat with pictures.
Asked = GenerateParams | VisionParams


@dataclass(frozen=True)
class Charge:
    prompt_tokens: int
    completion_tokens: int


def prompt_bytes(params: Asked, indent: int | None = None) -> int:
    """Bytes of what the prompt is made of: its text, the calls and ids in the messages, and
    the tools as JSON (indented by ``indent``, as a template may render them)."""
    if isinstance(params, VisionParams):
        return sum(len(m.text.encode()) for m in params.messages)
    if params.messages is not None:
        return sum(_message_bytes(m) for m in params.messages) + _tools_bytes(params, indent)
    return len((params.prompt or "").encode())


def _message_bytes(message: ChatMessage) -> int:
    calls = sum(len((c.id + c.name + c.arguments).encode()) for c in message.tool_calls)
    return len(message.content.encode()) + calls + len((message.tool_call_id or "").encode())


def _tools_bytes(params: GenerateParams, indent: int | None) -> int:
    if not params.tools:
        return 0
    listed = [t.template_form() for t in params.tools]
    return len(json.dumps(listed, indent=indent, ensure_ascii=False).encode())


def _messages(params: Asked) -> int:
    return len(params.messages) if params.messages is not None else 0


def _calls(params: Asked) -> int:
    """Calls and tool answers in the messages: each has its own frame of JSON."""
    if isinstance(params, VisionParams) or params.messages is None:
        return 0
    return sum(len(m.tool_calls) + (m.tool_call_id is not None) for m in params.messages)


def _schema_bytes(params: Asked) -> int:
    if isinstance(params, VisionParams) or params.json_schema is None:
        return 0
    return len(json.dumps(params.json_schema, ensure_ascii=False).encode())


def _tools(params: Asked, tokens: int) -> int:
    """``tokens`` if tools are offered (their instructions), else 0."""
    return tokens if isinstance(params, GenerateParams) and params.tools else 0


def _pictures(params: Asked) -> int:
    """The most tokens the pictures in a chat can take (a model's patches per picture)."""
    return IMAGE_TOKENS * len(params.images) if isinstance(params, VisionParams) else 0


def prompt_estimate(params: Asked) -> int:
    """About as many tokens as the prompt makes, on the high side."""
    text = math.ceil(prompt_bytes(params) / BYTES_PER_TOKEN) + 4 * _messages(params) + 16
    calls = math.ceil(CALL_TOKENS * _calls(params) / BYTES_PER_TOKEN)
    return text + calls + _tools(params, TOOLS_TOKENS_ESTIMATE) + _pictures(params)


def prompt_bound(params: Asked) -> int:
    """The most tokens the prompt can make: a byte-level tokenizer spends at most one a
    byte, plus what the chat template adds and the pictures take."""
    return (
        prompt_bytes(params, TOOLS_INDENT)
        + MESSAGE_TOKENS * _messages(params)
        + CALL_TOKENS * _calls(params)
        + TEMPLATE_TOKENS
        + _tools(params, TOOLS_TOKENS)
        + _schema_bytes(params)
        + _pictures(params)
    )


def choices(params: Asked) -> int:
    """How many answers the call asked for (chats with pictures have one)."""
    return params.n if isinstance(params, GenerateParams) else 1


def budget(params: Asked) -> int:
    """The tokens to reserve for the call before it starts: the prompt is read once, each
    choice may write ``max_tokens``."""
    return choices(params) * params.max_tokens + prompt_estimate(params)


def charge(params: Asked, reported: Mapping[str, Any], forwarded: str, finished: bool) -> Charge:
    """What the call costs: the node's counts, checked against the request and the text
    ``forwarded`` to the caller. A call that did not finish and forwarded nothing costs
    nothing: its caller received nothing."""
    if not finished and not forwarded:
        return Charge(0, 0)
    size = len(forwarded.encode())
    prompt = _count(reported.get("prompt_tokens"))
    completion = _count(reported.get("completion_tokens"))
    if prompt is None:
        prompt = prompt_estimate(params)
    if completion is None:
        completion = math.ceil(size / BYTES_PER_TOKEN)
    # Stop sequences are generated but not forwarded; by each choice.
    hidden = (sum(len(s.encode()) for s in params.stop) + SILENT_TOKENS) * choices(params)
    most = min(choices(params) * params.max_tokens, size + hidden)
    return Charge(min(prompt, prompt_bound(params)), min(completion, most))


def embedding_bound(params: EmbedParams) -> int:
    """The most tokens an embedding call can read: token arrays as given; for texts, a
    token a byte (a byte-level tokenizer's worst) and the special tokens around each."""
    if params.tokens:
        return sum(map(len, params.tokens))
    return sum(len(t.encode()) for t in params.texts) + EMBED_SPECIAL_TOKENS * params.count


def embedding_charge(params: EmbedParams, reported: object) -> int:
    """What an answered embedding call costs: the tokens its node read, at most what the
    inputs can make (the bound where the node said nothing)."""
    bound = embedding_bound(params)
    counted = _count(reported)
    return bound if counted is None else min(counted, bound)


def _count(value: object) -> int | None:
    """A node's count as a number of tokens; None if it sent none (or not a number)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return max(0, value)
