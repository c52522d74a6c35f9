"""Chat templates with tool support, written in the style of the model families whose call
formats the node parses: Qwen 2.5 (Hermes ``<tool_call>``), Llama 3.1 (JSON with
``parameters``) and Mistral v3 (``[TOOL_CALLS]``, 9-character call ids)."""

from __future__ import annotations

from pathlib import Path

FAMILIES = ("hermes", "llama3", "mistral")


def chat_template(family: str) -> str:
    """The template text of ``family``, one of ``FAMILIES``."""
    return (Path(__file__).parent / f"{family}.jinja").read_text()
