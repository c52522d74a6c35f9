"""A text-generation runner on Hugging Face transformers.

Every generation runs in the model's ``BatchEngine`` (continuous batching: concurrent
requests share each decoding step); ``generate`` turns the tokens it hands back into
text deltas. Stop sequences are matched on the text (holding back any tail that may be
the start of one); a stop sequence or a caller that goes away takes the request out of
the batch at the next step, so abandoned work does not keep the model busy.

Sampling draws from a per-request ``torch.Generator`` instead of the global RNG: a seeded
request gives the same text whatever else shares its batch. What a request leaves unset
(temperature, top_p) comes from the model's own generation config, read as transformers'
``generate`` reads it: greedy unless it asks to sample. A generation caught in a loop (the
same run of tokens over and over) is ended, as a small model can repeat itself until
``max_tokens``.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.worker.runners.base import Delta, Progress, drop_model
from node.worker.runners.batch import BatchEngine, Pick
from node.worker.runners.kv import FALLBACK_CONTEXT, default_slots
from protocols import GenerateParams, ModelInfo

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


# A loop is the same block of up to LOOP_PERIOD tokens repeated until it spans LOOP_SPAN
# tokens (at least LOOP_REPEATS times): past that, more of it is never what was wanted.
LOOP_PERIOD = 32
LOOP_REPEATS = 4
LOOP_SPAN = 64


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


class TextRunner:
    """One causal language model loaded on one device, serving up to ``max_batch``
    generations at once in one batch."""

    def __init__(
        self,
        model_id: str,
        model: Any,
        tokenizer: Any,
        dtype: str,
        max_batch: int,
    ) -> None:
        self._model_id = model_id
        self._model: Any = model
        self._tokenizer = tokenizer
        self._dtype = dtype
        self._max_batch = max_batch
        self._context = int(
            getattr(model.config, "max_position_embeddings", None) or FALLBACK_CONTEXT
        )
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self._eos: set[int] = set() if eos is None else {eos} if isinstance(eos, int) else set(eos)
        self._engine: BatchEngine | None = BatchEngine(model, self._eos, max_batch, model_id)
        self.defaults = Sampling.of(model.generation_config)
        # Fast tokenizers are Rust objects shared between request threads.
        self._encoding = threading.Lock()

    @classmethod
    def load(
        cls,
        model_id: str,
        path: Path,
        device: str,
        dtype: str | None,
        max_batch: int,
        progress: Progress,
        free_memory: Callable[[], int] | None = None,
    ) -> TextRunner:
        """Load the tokenizer and model stored at ``path`` onto ``device``.

        ``dtype`` defaults to float32 on CPU and to half precision on GPUs (bfloat16
        where CUDA supports it). ``max_batch`` 0 takes as many generations at once as half
        of ``free_memory()`` (read once the weights are in) holds key/value caches for.
        """
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.monotonic()
        dtype = dtype or default_dtype(device)
        progress(f"loading tokenizer of {model_id}", 0.0)
        tokenizer = AutoTokenizer.from_pretrained(path)
        progress(f"loading weights of {model_id} ({dtype})", 0.1)
        model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        progress(f"moving {model_id} to {device}", 0.8)
        model.to(device)
        model.eval()
        logger.info(
            "loaded %s on %s as %s in %.1f s", model_id, device, dtype, time.monotonic() - started
        )
        if max_batch <= 0:
            free = free_memory() if free_memory is not None else 0
            max_batch = default_slots(model.config, getattr(torch, dtype).itemsize, free)
        progress(f"{model_id} ready on {device}", 1.0)
        return cls(model_id, model, tokenizer, dtype, max_batch)

    @property
    def info(self) -> ModelInfo:
        template = self._tokenizer.chat_template
        return ModelInfo(
            self._model_id,
            "text-generation",
            self._dtype,
            self._context,
            self._max_batch,
            "ready",
            chat=bool(template),
            tools=reads_tools(template),
        )

    @property
    def tokens_per_s(self) -> float:
        """Recent decode speed of the whole batch: what one more request shares."""
        engine = self._engine
        return 0.0 if engine is None else engine.tokens_per_s

    def generate(self, params: GenerateParams, cancelled: threading.Event) -> Iterator[Delta]:
        """Stream the completion of ``params``.

        Raises ``ValueError`` at once (before any delta) when the prompt does not fit the
        model's context, or chat messages go to a model without a chat template.
        """
        if self._engine is None:
            raise RuntimeError(f"{self._model_id} is closed")
        prompt = self._encode(params)
        prompt_tokens = len(prompt)
        if prompt_tokens == 0:
            raise ValueError("the prompt is empty")
        if prompt_tokens >= self._context:
            raise ValueError(
                f"the prompt is {prompt_tokens} tokens but {self._model_id} has a context "
                f"length of {self._context} tokens"
            )
        max_new = min(params.max_tokens, self._context - prompt_tokens)
        return self._stream(params, cancelled, prompt, max_new)

    def close(self) -> None:
        """Drop the model so its memory can be reused; later ``generate`` calls fail.

        Generations still running or waiting end as cancelled.
        """
        engine, self._engine = self._engine, None
        if engine is None:
            return
        engine.close()
        drop_model(self)

    def _encode(self, params: GenerateParams) -> list[int]:
        tokenizer = self._tokenizer
        with self._encoding:
            if params.messages is not None:
                if not tokenizer.chat_template:
                    raise ValueError(
                        f"{self._model_id} has no chat template: send a raw prompt instead"
                    )
                messages = [{"role": m.role, "content": m.content} for m in params.messages]
                encoded = tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
                )
            else:
                encoded = tokenizer(params.prompt or "", return_tensors="pt")
        return [int(i) for i in encoded["input_ids"][0]]

    def _stream(
        self, params: GenerateParams, cancelled: threading.Event, prompt: list[int], max_new: int
    ) -> Iterator[Delta]:
        prompt_tokens = len(prompt)
        halt = threading.Event()  # set by a stop sequence, or when the caller stops reading
        engine = self._engine
        if engine is None:
            raise RuntimeError(f"{self._model_id} is closed")
        pick = _picker(params, self.defaults, prompt)
        channel = engine.submit(prompt, max_new, pick, _Either(cancelled, halt))
        text = _TextStream(self._tokenizer)
        pending = ""  # text not yet sent: it may be the start of a stop sequence
        tokens = 0
        produced: list[int] = []
        try:
            for token in channel:
                tokens += 1
                produced.append(token)
                if looping(produced):
                    logger.info("%s: ended a generation caught in a loop", self._model_id)
                    halt.set()
                    yield Delta(pending + text.flush(), prompt_tokens, tokens, "stop")
                    return
                pending += text.add(token)
                cut = _first_stop(pending, params.stop)
                if cut >= 0:
                    halt.set()
                    yield Delta(pending[:cut], prompt_tokens, tokens, "stop")
                    return
                keep = _stop_prefix_len(pending, params.stop)
                ready, pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
                if ready:
                    yield Delta(ready, prompt_tokens, tokens)
        finally:
            halt.set()
        finished = channel.finished
        assert finished is not None
        if finished.reason == "cancelled":
            yield Delta("", prompt_tokens, finished.tokens, "cancelled")
            return
        rest = pending + text.flush()
        cut = _first_stop(rest, params.stop)
        if cut >= 0:
            yield Delta(rest[:cut], prompt_tokens, finished.tokens, "stop")
        else:
            yield Delta(rest, prompt_tokens, finished.tokens, finished.reason)


class _Either:
    """Set when either event is: the engine watches one flag per request."""

    def __init__(self, first: threading.Event, second: threading.Event) -> None:
        self._first = first
        self._second = second

    def is_set(self) -> bool:
        return self._first.is_set() or self._second.is_set()


class _TextStream:
    """Turns token ids into text in word-sized pieces, as ``TextIteratorStreamer`` does."""

    def __init__(self, tokenizer: Any) -> None:
        from transformers import TextIteratorStreamer

        self._text: Any = TextIteratorStreamer(
            tokenizer, skip_prompt=False, skip_special_tokens=True
        )

    def add(self, token: int) -> str:
        import torch

        self._text.put(torch.tensor([token]))
        return self._drain()

    def flush(self) -> str:
        self._text.end()
        return self._drain()

    def _drain(self) -> str:
        pieces: list[str] = []
        while True:
            try:
                piece = self._text.text_queue.get_nowait()
            except queue.Empty:
                return "".join(pieces)
            if isinstance(piece, str):  # the end marker is not text
                pieces.append(piece)


def _picker(params: GenerateParams, defaults: Sampling, prompt: list[int]) -> Pick:
    """How one request chooses its next token: greedy, or sampled with its own generator;
    what the request leaves unset comes from the model's ``defaults``."""
    import torch

    temperature = defaults.temperature if params.temperature is None else params.temperature
    top_p = defaults.top_p if params.top_p is None else params.top_p
    top_k, penalty = defaults.top_k, defaults.repetition_penalty
    if temperature <= 0 and penalty == 1.0:
        return None  # greedy, batched by the engine
    seen = list(prompt)  # the penalty applies to every token of the context
    # On the CPU: every backend can move probabilities there, not every one has generators.
    generator = torch.Generator(device="cpu")
    if params.seed is None:
        generator.seed()
    else:
        generator.manual_seed(params.seed)

    def pick(logits: torch.Tensor) -> int:
        logits = logits.float()
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

    return pick


def looping(tokens: list[int]) -> bool:
    """Whether ``tokens`` end in one block repeated over ``LOOP_SPAN`` tokens or more."""
    for period in range(1, LOOP_PERIOD + 1):
        repeats = max(LOOP_REPEATS, -(-LOOP_SPAN // period))
        span = period * repeats
        if len(tokens) < span:
            continue
        tail = tokens[-span:]
        block = tail[-period:]
        if tail == block * repeats:
            return True
    return False


def _first_stop(text: str, stops: list[str]) -> int:
    """Where the earliest stop sequence in ``text`` starts, or -1."""
    return min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)


def _stop_prefix_len(text: str, stops: list[str]) -> int:
    """Length of the longest tail of ``text`` that is a proper start of a stop sequence."""
    best = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:size]):
                best = size
                break
    return best


def reads_tools(template: object) -> bool:
    """Whether a chat template (or a map of named ones, as some tokenizers keep) renders
    tool definitions: it reads the ``tools`` variable, or one of them is named for tools."""
    if isinstance(template, dict):
        return "tool_use" in template or any(reads_tools(t) for t in template.values())
    return isinstance(template, str) and re.search(r"\btools\b", template) is not None


def default_dtype(device: str) -> str:
    if device == "cpu":
        return "float32"
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float16"
