"""A text-generation runner on Hugging Face transformers.

``model.generate`` runs in a background thread and hands tokens to a
``TextIteratorStreamer``; ``generate`` turns its text into deltas as it arrives. Stop
sequences are matched on the text (holding back any tail that may be the start of one),
and a stopping criterion ends ``model.generate`` as soon as the caller cancels or a stop
sequence is found, so abandoned work does not keep the model busy.

Sampling draws from a per-request ``torch.Generator`` instead of the global RNG: a seeded
request gives the same text even while other models sample in other threads.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.worker.runners.base import Delta, Progress, free_device_memory
from protocols import GenerateParams, ModelInfo

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# Used when a config does not say how long a context the model was trained for.
_FALLBACK_CONTEXT = 2048


class TextRunner:
    """One causal language model loaded on one device, serving one generation at a time."""

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
            getattr(model.config, "max_position_embeddings", None) or _FALLBACK_CONTEXT
        )
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self._eos: set[int] = set() if eos is None else {eos} if isinstance(eos, int) else set(eos)
        pad = tokenizer.pad_token_id
        self._pad: int | None = pad if pad is not None else min(self._eos, default=None)
        # generate is not safe to run twice at once on one model (batching comes later).
        self._busy = threading.Lock()
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
    ) -> TextRunner:
        """Load the tokenizer and model stored at ``path`` onto ``device``.

        ``dtype`` defaults to float32 on CPU and to half precision on GPUs (bfloat16
        where CUDA supports it).
        """
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.monotonic()
        dtype = dtype or _default_dtype(device)
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
        progress(f"{model_id} ready on {device}", 1.0)
        return cls(model_id, model, tokenizer, dtype, max_batch)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            self._model_id, "text-generation", self._dtype, self._context, self._max_batch, "ready"
        )

    def generate(self, params: GenerateParams, cancelled: threading.Event) -> Iterator[Delta]:
        """Stream the completion of ``params``.

        Raises ``ValueError`` at once (before any delta) when the prompt does not fit the
        model's context, or chat messages go to a model without a chat template.
        """
        model = self._model
        if model is None:
            raise RuntimeError(f"{self._model_id} is closed")
        input_ids, attention_mask = self._encode(params, model.device)
        prompt_tokens = int(input_ids.shape[1])
        if prompt_tokens == 0:
            raise ValueError("the prompt is empty")
        if prompt_tokens >= self._context:
            raise ValueError(
                f"the prompt is {prompt_tokens} tokens but {self._model_id} has a context "
                f"length of {self._context} tokens"
            )
        max_new = min(params.max_tokens, self._context - prompt_tokens)
        return self._stream(params, cancelled, input_ids, attention_mask, max_new)

    def close(self) -> None:
        """Drop the model so its memory can be reused; later ``generate`` calls fail.

        Waits for a running generation to end (cancel it first to make that quick).
        """
        with self._busy:
            model, self._model = self._model, None
        if model is None:
            return
        device = str(model.device)
        del model
        free_device_memory(device)

    def _encode(
        self, params: GenerateParams, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
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
        return encoded["input_ids"].to(device), encoded["attention_mask"].to(device)

    def _stream(
        self,
        params: GenerateParams,
        cancelled: threading.Event,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new: int,
    ) -> Iterator[Delta]:
        from transformers import LogitsProcessorList, StoppingCriteriaList

        prompt_tokens = int(input_ids.shape[1])
        halt = threading.Event()  # set on cancellation, a stop sequence, or an early exit
        stream = _CountingStream(self._tokenizer)
        processors = LogitsProcessorList()
        if params.temperature > 0:
            processors.append(_Sampler(params.temperature, params.top_p, params.seed))
        failure: list[BaseException] = []

        def work() -> None:
            try:
                self._model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    max_new_tokens=max_new,
                    # Always "greedy": _Sampler has already reduced the choice to one token.
                    do_sample=False,
                    logits_processor=processors,
                    stopping_criteria=StoppingCriteriaList([_Halt(cancelled, halt)]),
                    streamer=stream,
                    pad_token_id=self._pad,
                )
            except BaseException as exc:
                failure.append(exc)
                stream.end()

        with self._busy:
            if self._model is None:
                raise RuntimeError(f"{self._model_id} is closed")
            if cancelled.is_set():
                yield Delta("", prompt_tokens, 0, "cancelled")
                return
            thread = threading.Thread(target=work, name=f"generate-{self._model_id}", daemon=True)
            thread.start()
            try:
                final, rest = yield from self._pieces(
                    params, cancelled, halt, stream, prompt_tokens
                )
            finally:
                halt.set()
                thread.join()
            if failure:
                raise failure[0]
            if final is None:  # the stream ran out: the model is done or was cancelled
                tokens = stream.tokens  # exact now that generate has returned
                if cancelled.is_set():
                    final = Delta("", prompt_tokens, tokens, "cancelled")
                elif tokens >= max_new and stream.last_token not in self._eos:
                    final = Delta(rest, prompt_tokens, tokens, "length")
                else:
                    final = Delta(rest, prompt_tokens, tokens, "stop")
            yield final

    def _pieces(
        self,
        params: GenerateParams,
        cancelled: threading.Event,
        halt: threading.Event,
        stream: _CountingStream,
        prompt_tokens: int,
    ) -> Generator[Delta, None, tuple[Delta | None, str]]:
        """Yield text as it comes.

        Returns the final delta if a stop sequence ended the text, else ``None`` and the
        text held back at the end.
        """
        pending = ""  # text not yet sent: it may be the start of a stop sequence
        while (item := stream.queue.get()) is not None:
            text, tokens = item
            if cancelled.is_set():
                return None, ""
            pending += text
            cut = min((i for i in (pending.find(s) for s in params.stop) if i >= 0), default=-1)
            if cut >= 0:
                halt.set()
                return Delta(pending[:cut], prompt_tokens, tokens, "stop"), ""
            keep = _stop_prefix_len(pending, params.stop)
            ready, pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
            if ready:
                yield Delta(ready, prompt_tokens, tokens)
        return None, pending


class _CountingStream:
    """A streamer for ``model.generate`` that pairs each piece of text with a token count.

    It feeds the generated ids to a ``TextIteratorStreamer``, which decodes them into
    word-sized pieces, and queues ``(text, tokens generated so far)``; ``None`` ends it.
    """

    def __init__(self, tokenizer: Any) -> None:
        from transformers import TextIteratorStreamer

        self._text: Any = TextIteratorStreamer(
            tokenizer, skip_prompt=True, skip_special_tokens=True
        )
        self.queue: queue.Queue[tuple[str, int] | None] = queue.Queue()
        self.tokens = 0
        self.last_token: int | None = None
        self._ended = False

    def put(self, value: torch.Tensor) -> None:
        is_prompt = self._text.next_tokens_are_prompt
        self._text.put(value)
        if not is_prompt:
            self.tokens += value.numel()
            self.last_token = int(value.reshape(-1)[-1])
        self._forward()

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._text.end()
        self._forward()
        self.queue.put(None)

    def _forward(self) -> None:
        while True:
            try:
                text = self._text.text_queue.get_nowait()
            except queue.Empty:
                return
            if text:
                self.queue.put((text, self.tokens))


class _Halt:
    """Stopping criterion: end ``model.generate`` when the caller cancels or a stop is hit."""

    def __init__(self, cancelled: threading.Event, halt: threading.Event) -> None:
        self._cancelled = cancelled
        self._halt = halt

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        import torch

        stop = self._cancelled.is_set() or self._halt.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class _Sampler:
    """Logits processor that samples one token (temperature, top-p) with its own generator.

    It leaves every other token at -inf, so the greedy step of ``generate`` picks the
    sampled one.
    """

    def __init__(self, temperature: float, top_p: float, seed: int | None) -> None:
        import torch

        self._temperature = temperature
        self._top_p = top_p
        # On the CPU: every backend can move probabilities there, not every one has generators.
        self._generator = torch.Generator(device="cpu")
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        probs = torch.softmax(scores.float() / self._temperature, dim=-1).cpu()
        if self._top_p < 1.0:
            ordered, order = probs.sort(dim=-1, descending=True)
            # Drop a token when the ones above it already cover top_p; the first one stays.
            outside = ordered.cumsum(dim=-1) - ordered >= self._top_p
            probs = probs.scatter(-1, order, ordered.masked_fill(outside, 0.0))
        choice = torch.multinomial(probs, 1, generator=self._generator).to(scores.device)
        picked = torch.full_like(scores, float("-inf"))
        return picked.scatter(-1, choice, 0.0)


def _stop_prefix_len(text: str, stops: list[str]) -> int:
    """Length of the longest tail of ``text`` that is a proper start of a stop sequence."""
    best = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:size]):
                best = size
                break
    return best


def _default_dtype(device: str) -> str:
    if device == "cpu":
        return "float32"
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float16"
