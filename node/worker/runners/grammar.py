"""Constrained decoding: a sequence's next token restricted to those a JSON schema allows.

A ``Grammars`` per loaded model compiles schemas with xgrammar against the model's
tokenizer (compiled grammars are cached by the compiler, so a schema sent again costs
nothing). Each constrained sequence gets its own ``Constraint``: a matcher that follows
the tokens chosen so far and masks the sequence's row of logits before its next token is
picked, so the batch's other sequences are untouched. Whitespace between JSON tokens is
limited to one space: a free run of it is a way for a weak model never to finish.
docs/engines.md says why xgrammar.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# A JSON object of any shape: what response_format json_object asks for.
ANY_OBJECT: dict[str, Any] = {"type": "object"}


class Grammars:
    """Compiles JSON schemas for one tokenizer; thread-safe."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop: set[int]) -> None:
        import xgrammar

        info = xgrammar.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop)
        )
        self._compiler = xgrammar.GrammarCompiler(info)
        self._vocab_size = vocab_size
        self._lock = threading.Lock()

    def constraint(self, schema: dict[str, Any]) -> Constraint:
        """A fresh matcher for one sequence; ``ValueError`` for a schema that cannot be
        compiled (the caller's mistake)."""
        try:
            with self._lock:
                compiled = self._compiler.compile_json_schema(
                    json.dumps(schema), any_whitespace=False
                )
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ValueError(f"response_format: the JSON schema cannot be used: {exc}") from exc
        return Constraint(compiled, self._vocab_size)


class Constraint:
    """Where one sequence stands in its grammar."""

    def __init__(self, compiled: Any, vocab_size: int) -> None:
        import xgrammar

        self._matcher = xgrammar.GrammarMatcher(compiled)
        self._bitmask = xgrammar.allocate_token_bitmask(1, vocab_size)

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (one row, float) with every token the grammar forbids at -inf."""
        import xgrammar

        self._matcher.fill_next_token_bitmask(self._bitmask)
        masked = logits.clone()
        xgrammar.apply_token_bitmask_inplace(masked, self._bitmask.to(masked.device))
        return masked

    def accept(self, token: int) -> None:
        if not self._matcher.accept_token(token):
            # Only a masked-out token can fail, and none can be chosen: a bug, not input.
            raise RuntimeError(f"the grammar refused token {token} it allowed")
