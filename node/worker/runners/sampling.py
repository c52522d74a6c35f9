"""How one sequence chooses its next token from its row of logits.

The choice follows the request, with the model's own generation config for what it
leaves unset (read as transformers' ``generate`` reads it: greedy unless it asks to
sample): repetition penalty, then temperature, top-k and top-p. A ``Constraint`` masks
the row first. Sampling draws from a per-request ``torch.Generator``, so a seeded request
gives the same text whatever else shares its batch.

Log probabilities are those of the model's own distribution: a log-softmax of the raw
logits, before penalty, temperature, top-k, top-p or a grammar's mask, as vLLM and OpenAI
report them. The picker records each chosen token's (and the top alternatives') ids; the
runner turns ids into text on its own thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from node.worker.runners.batch import Pick
from node.worker.runners.grammar import Constraint
from protocols import GenerateParams

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Sampling:
    """How a model chooses tokens when a request does not say: temperature 0 is greedy,
    top_k 0 keeps every token, repetition_penalty 1 changes nothing."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0

    @classmethod
    def of(cls, config: Any) -> Sampling:
        """The defaults in a transformers ``GenerationConfig``."""
        penalty = float(getattr(config, "repetition_penalty", None) or 1.0)
        if not getattr(config, "do_sample", False):
            return cls(repetition_penalty=penalty)
        return cls(
            float(getattr(config, "temperature", None) or 1.0),
            float(getattr(config, "top_p", None) or 1.0),
            int(getattr(config, "top_k", None) or 0),
            penalty,
        )


@dataclass(frozen=True)
class Chosen:
    """A chosen token's id and log probability, and the ``top`` ids with theirs."""

    token: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


class Picker:
    """A ``Pick`` for one request; ``chosen`` fills as it picks when logprobs are asked."""

    def __init__(
        self,
        choose: Callable[[torch.Tensor], int],
        constraint: Constraint | None,
        top_logprobs: int | None,
    ) -> None:
        self._choose = choose
        self._constraint = constraint
        self._top = top_logprobs  # None: no logprobs
        self.chosen: list[Chosen] = []

    def __call__(self, logits: torch.Tensor) -> int:
        import torch

        row = logits.float()
        token = self._choose(row if self._constraint is None else self._constraint.mask(row))
        if self._constraint is not None:
            self._constraint.accept(token)
        if self._top is not None:
            logprobs = torch.log_softmax(row, dim=-1)
            top: list[tuple[int, float]] = []
            if self._top:
                values, ids = logprobs.topk(self._top)
                top = list(zip(ids.tolist(), values.tolist(), strict=True))
            self.chosen.append(Chosen(token, float(logprobs[token]), top))
        return token


def picker(
    params: GenerateParams,
    defaults: Sampling,
    prompt: list[int],
    constraint: Constraint | None = None,
) -> Pick:
    """How one request chooses its next token: ``None`` (greedy, batched by the engine)
    when nothing calls for more, else a ``Picker``."""
    choose = _chooser(params, defaults, prompt)
    if choose is None and constraint is None and not params.logprobs:
        return None
    return Picker(choose or _greedy, constraint, params.top_logprobs if params.logprobs else None)


def _greedy(logits: torch.Tensor) -> int:
    return int(logits.argmax())


def _chooser(
    params: GenerateParams, defaults: Sampling, prompt: list[int]
) -> Callable[[torch.Tensor], int] | None:
    """Penalty and sampling for one request, or ``None`` for plain greedy."""
    import torch

    temperature = defaults.temperature if params.temperature is None else params.temperature
    top_p = defaults.top_p if params.top_p is None else params.top_p
    top_k, penalty = defaults.top_k, defaults.repetition_penalty
    if temperature <= 0 and penalty == 1.0:
        return None
    seen = list(prompt)  # the penalty applies to every token of the context
    # On the CPU: every backend can move probabilities there, not every one has generators.
    generator = torch.Generator(device="cpu")
    if params.seed is None:
        generator.seed()
    else:
        generator.manual_seed(params.seed)

    def choose(logits: torch.Tensor) -> int:
        if penalty != 1.0:
            # As transformers does: a seen token's logit is divided by the penalty if
            # positive, multiplied by it if negative.
            ids = torch.tensor(sorted(set(seen)), device=logits.device)
            chosen = logits[ids]
            logits = logits.clone()
            logits[ids] = torch.where(chosen > 0, chosen / penalty, chosen * penalty)
        if temperature <= 0:
            token = int(logits.argmax())
        else:
            probs = torch.softmax(logits / temperature, dim=-1).cpu()
            if top_k > 0:
                kth = probs.topk(min(top_k, probs.numel())).values[-1]
                probs = probs.masked_fill(probs < kth, 0.0)
            if top_p < 1.0:
                ordered, order = probs.sort(dim=-1, descending=True)
                # Drop a token when the ones above it already cover top_p; the first stays.
                outside = ordered.cumsum(dim=-1) - ordered >= top_p * ordered.sum()
                probs = probs.scatter(-1, order, ordered.masked_fill(outside, 0.0))
            token = int(torch.multinomial(probs, 1, generator=generator))
        seen.append(token)
        return token

    return choose
