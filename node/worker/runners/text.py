"""A text-generation runner on Hugging Face transformers.

Every generation runs in the model's ``BatchEngine`` (continuous batching: concurrent
requests share each decoding step); ``generate`` turns the tokens it hands back into
text deltas. Stop sequences are matched on the text (holding back any tail that may be
the start of one); a stop sequence or a caller that goes away takes the request out of
the batch at the next step, so abandoned work does not keep the model busy.

Each request picks its tokens as ``sampling`` says (a grammar's mask first, for a JSON
answer or a forced tool call; its log probabilities recorded when asked). Tools are
rendered by the model's chat template, and the calls the model writes are parsed out of
its text as ``tool_calls`` says. A generation caught in a loop (the same run of tokens
over and over) is ended, as a small model can repeat itself until ``max_tokens``.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.worker.runners.base import Delta, Progress, drop_model
from node.worker.runners.batch import BatchEngine
from node.worker.runners.grammar import ANY_OBJECT, Constraint, Grammars
from node.worker.runners.kv import FALLBACK_CONTEXT, default_slots
from node.worker.runners.sampling import Picker, Sampling, picker
from node.worker.runners.tool_calls import (
    CallParser,
    NamedParser,
    forced_parser,
    nine_character_ids,
    tool_format,
)
from protocols import CallPart, GenerateParams, ModelInfo, TokenLogprob, call_schema

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


# A loop is the same block of up to LOOP_PERIOD tokens repeated until it spans LOOP_SPAN
# tokens (at least LOOP_REPEATS times): past that, more of it is never what was wanted.
LOOP_PERIOD = 32
LOOP_REPEATS = 4
LOOP_SPAN = 64


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
        self.tool_format = tool_format(tokenizer.chat_template)
        self._grammars: Grammars | None = None  # built for the first constrained call

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
        if device.startswith("cuda"):
            use_fixed_attention_kernels()
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
            constrained=True,  # its own sampler applies a grammar's mask (grammar.py)
        )

    @property
    def engine(self) -> BatchEngine | None:
        """The batch every generation runs in; None once closed. Benchmarks submit token
        ids to it directly, without the text around them."""
        return self._engine

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
                if params.tools and self.tool_format is None:
                    raise ValueError(
                        f"tools: the chat template of {self._model_id} does not render tools"
                    )
                # tool_choice none: the model is not told of the tools, so it cannot call one.
                offered = params.tools if params.tool_choice != "none" else []
                messages = [m.template_form() for m in params.messages]
                if self.tool_format == "mistral":
                    messages = nine_character_ids(messages)
                encoded = self._render(messages, [t.template_form() for t in offered])
            else:
                encoded = tokenizer(params.prompt or "", return_tensors="pt")
        return [int(i) for i in encoded["input_ids"][0]]

    def _render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        """The chat rendered and encoded; ``ValueError`` for a conversation the template
        refuses (Llama 3.1's takes one call per turn, Mistral's wants tool answers to follow
        calls)."""
        from jinja2 import TemplateError

        try:
            return self._tokenizer.apply_chat_template(
                messages,
                tools=tools or None,
                add_generation_prompt=True,
                return_dict=True,
                return_tensors="pt",
            )
        except TemplateError as exc:
            raise ValueError(
                f"messages: the chat template of {self._model_id} refuses them: {exc}"
            ) from exc

    def _stream(
        self, params: GenerateParams, cancelled: threading.Event, prompt: list[int], max_new: int
    ) -> Iterator[Delta]:
        prompt_tokens = len(prompt)
        halt = threading.Event()  # set by a stop sequence, or when the caller stops reading
        engine = self._engine
        if engine is None:
            raise RuntimeError(f"{self._model_id} is closed")
        pick = picker(params, self.defaults, prompt, self._constraint(params))
        channel = engine.submit(prompt, max_new, pick, _Either(cancelled, halt))
        produced: list[int] = []
        shape = _Shaper(self, params, pick, prompt_tokens, produced)
        text = _TextStream(self._tokenizer, skip_special=shape.skip_special)
        pending = ""  # text not yet sent: it may be the start of a stop sequence
        try:
            for token in channel:
                produced.append(token)
                if looping(produced):
                    logger.info("%s: ended a generation caught in a loop", self._model_id)
                    halt.set()
                    yield shape.last(pending + text.flush(), len(produced), "stop")
                    return
                pending += text.add(token)
                cut = _first_stop(pending, params.stop)
                if cut >= 0:
                    halt.set()
                    yield shape.last(pending[:cut], len(produced), "stop")
                    return
                keep = _stop_prefix_len(pending, params.stop)
                ready, pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
                if ready and (delta := shape.piece(ready)) is not None:
                    yield delta
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
            yield shape.last(rest[:cut], finished.tokens, "stop")
        else:
            yield shape.last(rest, finished.tokens, finished.reason)

    def _constraint(self, params: GenerateParams) -> Constraint | None:
        """The grammar ``params`` holds its answer to, if any."""
        if params.response_format == "json_schema":
            schema = params.json_schema
        elif params.response_format == "json_object":
            schema = ANY_OBJECT
        elif params.tool_choice == "required":
            schema = call_schema(params.tools, params.parallel_tool_calls)
        elif params.tool_choice == "function":
            (tool,) = [t for t in params.tools if t.name == params.tool_name]
            schema = tool.parameters or ANY_OBJECT
        else:
            return None
        with self._encoding:
            if self._grammars is None:
                vocab = int(self._model.config.vocab_size)
                self._grammars = Grammars(self._tokenizer, vocab, self._eos)
            grammars = self._grammars
        return grammars.constraint(schema or ANY_OBJECT)

    def token_texts(self, ids: list[int]) -> list[str]:
        """Each token's own text (as decoded alone)."""
        with self._encoding:
            return [str(t) for t in self._tokenizer.batch_decode([[i] for i in ids])]


class _Shaper:
    """Turns one generation's text into deltas: tool calls parsed out of it, and the log
    probabilities of the tokens ``produced`` so far attached to the piece they made."""

    def __init__(
        self,
        runner: TextRunner,
        params: GenerateParams,
        pick: object,
        prompt_tokens: int,
        produced: list[int],
    ) -> None:
        self._runner = runner
        self._picker = pick if params.logprobs and isinstance(pick, Picker) else None
        self._prompt_tokens = prompt_tokens
        self._produced = produced
        self._sent = 0  # tokens whose logprobs went out
        names = {t.name for t in params.tools}
        self._parser: CallParser | NamedParser | None = None
        if params.tool_choice in ("required", "function"):
            self._parser = forced_parser(names, params.tool_name)
        elif params.tools and params.tool_choice == "auto" and runner.tool_format is not None:
            self._parser = CallParser(runner.tool_format, names, params.parallel_tool_calls)
        # Mistral's [TOOL_CALLS] is a special token: the parser must see it.
        self.skip_special = not (
            isinstance(self._parser, CallParser) and self._parser.format == "mistral"
        )
        self._called = False

    def piece(self, text: str) -> Delta | None:
        """The delta for ``text``, the answer going on; None when it has nothing to say."""
        content, calls = (text, []) if self._parser is None else self._parser.feed(text)
        logprobs = self._logprobs()
        if not content and not calls and not logprobs:
            return None
        return self._delta(content, calls, logprobs, len(self._produced), None)

    def last(self, text: str, tokens: int, finish: str) -> Delta:
        """The last delta, with ``finish`` (``tool_calls`` if the model ended by calling)."""
        content, calls = (text, []) if self._parser is None else self._parser.feed(text)
        if self._parser is not None:
            rest, more = self._parser.close()
            content, calls = content + rest, calls + more
        delta = self._delta(content, calls, self._logprobs(), tokens, finish)
        if self._called and finish == "stop":
            delta = replace(delta, finish_reason="tool_calls")
        return delta

    def _delta(
        self,
        content: str,
        calls: list[CallPart],
        logprobs: tuple[TokenLogprob, ...],
        tokens: int,
        finish: str | None,
    ) -> Delta:
        self._called = self._called or bool(calls)
        return Delta(content, self._prompt_tokens, tokens, finish, logprobs, tuple(calls))

    def _logprobs(self) -> tuple[TokenLogprob, ...]:
        """Those of the tokens produced since the last call (never the end token)."""
        if self._picker is None:
            return ()
        chosen = self._picker.chosen[self._sent : len(self._produced)]
        self._sent += len(chosen)
        ids = [c.token for c in chosen] + [i for c in chosen for i, _ in c.top]
        texts = iter(self._runner.token_texts(ids))
        named = [next(texts) for _ in chosen]
        return tuple(
            TokenLogprob(name, c.logprob, tuple((next(texts), lp) for _, lp in c.top))
            for name, c in zip(named, chosen, strict=True)
        )


class _Either:
    """Set when either event is: the engine watches one flag per request."""

    def __init__(self, first: threading.Event, second: threading.Event) -> None:
        self._first = first
        self._second = second

    def is_set(self) -> bool:
        return self._first.is_set() or self._second.is_set()


class _TextStream:
    """Turns token ids into text in word-sized pieces, as ``TextIteratorStreamer`` does."""

    def __init__(self, tokenizer: Any, skip_special: bool = True) -> None:
        from transformers import TextIteratorStreamer

        self._text: Any = TextIteratorStreamer(
            tokenizer, skip_prompt=False, skip_special_tokens=skip_special
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


def use_fixed_attention_kernels() -> None:
    """Keep SDPA off its cuDNN backend (process-wide). That backend builds a plan for each new
    attention shape, and decoding makes a new one every step (the cache grows by a token):
    on an H200 a Llama-3.2-1B-shaped model decoded 8 sequences at 17-22 steps/s with it and
    87 without (``scripts/bench_gpu``, docs/benchmarks.md). Flash and memory-efficient
    attention need no plan."""
    import torch

    torch.backends.cuda.enable_cudnn_sdp(False)


def default_dtype(device: str) -> str:
    if device == "cpu":
        return "float32"
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float16"
