"""Continuous batching for one causal language model.

One engine thread owns the model. Each request is prefilled on its own (so its first
token is exactly what it would be alone), then joins the running batch at the next
decoding step; every step decodes one token for every sequence in the batch at once,
and a sequence leaves as soon as it finishes or its caller stops listening.

The batch shares one key/value cache, left-padded: a sequence shorter than the batch
has masked, zeroed positions in front of its own, and its position ids count only its
real tokens, so its keys and queries are exactly those it would have alone. When a
sequence leaves, its row is dropped and any columns that only padding still used are
trimmed off the front.

The cache is transformers' ``DynamicCache``; only its per-layer ``keys``/``values``
tensors are touched, which transformers 4.56+ and 5 share.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# A request's next token, chosen from its row of logits; ``None`` is greedy (the whole
# batch's greedy picks are taken at once).
Pick = Callable[["torch.Tensor"], int] | None


@dataclass(frozen=True)
class Finished:
    """The last item of a sequence's stream: why it ended and how many tokens it made."""

    reason: str  # "stop" (end of text) | "length" | "cancelled"
    tokens: int


class Flag(Protocol):
    """What the engine asks of a caller's stop signal (a ``threading.Event`` will do)."""

    def is_set(self) -> bool: ...


@dataclass
class _Sequence:
    prompt: list[int]
    max_new: int
    pick: Pick
    cancelled: Flag
    out: Channel
    generated: int = 0
    length: int = 0  # real (unpadded) tokens in the cache
    last: int = 0  # the token to feed at the next step


@dataclass
class Channel:
    """What the engine thread hands one consumer: token ids, then ``Finished`` or an error."""

    _items: deque[int | Finished | BaseException] = field(default_factory=deque)
    _ready: threading.Condition = field(default_factory=threading.Condition)
    finished: Finished | None = None  # set once the stream has ended

    def put(self, item: int | Finished | BaseException) -> None:
        with self._ready:
            self._items.append(item)
            self._ready.notify()

    def __iter__(self) -> Iterator[int]:
        while True:
            with self._ready:
                while not self._items:
                    self._ready.wait()
                item = self._items.popleft()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Finished):
                self.finished = item
                return
            yield item


class BatchEngine:
    """Runs every generation of one model in one batch, ``max_batch`` sequences at most.

    ``submit`` returns at once; requests past ``max_batch`` wait in arrival order for a
    free slot (the node's scheduler bounds how many can wait).
    """

    def __init__(self, model: Any, eos: set[int], max_batch: int, name: str) -> None:
        self._model = model
        self._eos = eos
        self.max_batch = max_batch
        self._name = name
        # transformers 5 renamed the cache argument; 4.x only knows the old name.
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        # Only the last position's logits are ever used: skip the vocabulary-wide rest.
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self._waiting: deque[_Sequence] = deque()
        self._active: list[_Sequence] = []
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        # Aggregate decode speed over the whole batch, exponentially weighted.
        self.tokens_per_s = 0.0

    @property
    def running(self) -> int:
        return len(self._active)

    def submit(self, prompt: list[int], max_new: int, pick: Pick, cancelled: Flag) -> Channel:
        """Queue a generation of up to ``max_new`` tokens after ``prompt``."""
        channel = Channel()
        sequence = _Sequence(prompt, max_new, pick, cancelled, channel)
        with self._wake:
            if self._closed:
                raise RuntimeError(f"{self._name} is closed")
            self._waiting.append(sequence)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"batch-{self._name}", daemon=True
                )
                self._thread.start()
            self._wake.notify()
        return channel

    def close(self) -> None:
        """Stop the engine: every waiting or running sequence ends as cancelled."""
        with self._wake:
            self._closed = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self._wake:
                    while not self._waiting and not self._active and not self._closed:
                        self._wake.wait()
                    if self._closed:
                        break
                    joining: list[_Sequence] = []
                    while self._waiting and len(self._active) + len(joining) < self.max_batch:
                        joining.append(self._waiting.popleft())
                try:
                    if joining:
                        self._join(joining)
                    if self._active:
                        self._step()
                except BaseException as exc:  # the model failed: fail its callers, not the node
                    logger.exception("generation with %s failed", self._name)
                    for sequence in {id(s): s for s in [*self._active, *joining]}.values():
                        sequence.out.put(exc)
                    self._reset()
        for sequence in [*self._active, *self._waiting]:
            sequence.out.put(Finished("cancelled", sequence.generated))
        self._reset()
        self._waiting.clear()

    def _reset(self) -> None:
        self._active = []
        self._cache = None
        self._mask = None

    def _join(self, joining: list[_Sequence]) -> None:
        """Prefill the newcomers together (left-padded), emit each one's first token, and
        add those that go on to the batch."""
        import torch
        from transformers import DynamicCache

        live = [s for s in joining if not self._cancelled(s)]
        if not live:
            return
        width = max(len(s.prompt) for s in live)
        device = self._model.device
        ids = torch.tensor([[0] * (width - len(s.prompt)) + s.prompt for s in live], device=device)
        mask = torch.tensor(
            [[0] * (width - len(s.prompt)) + [1] * len(s.prompt) for s in live], device=device
        )
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = self._forward(ids, mask, positions, cache)
        keep: list[int] = []
        for row, (sequence, token) in enumerate(zip(live, self._picks(live, logits), strict=True)):
            sequence.length = len(sequence.prompt)
            if self._emit(sequence, token):
                keep.append(row)
        if not keep:
            return
        if len(keep) < len(live):
            mask = _keep_rows(cache, mask, keep)
        self._merge([live[i] for i in keep], cache, mask)

    def _merge(self, sequences: list[_Sequence], cache: Any, mask: torch.Tensor) -> None:
        import torch

        if self._cache is None or self._mask is None:
            self._cache, self._mask, self._active = cache, mask, sequences
            return
        width, new = self._mask.shape[1], mask.shape[1]
        for mine, theirs in zip(self._cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_pad(mine.keys, new - width), _pad(theirs.keys, width - new)])
            mine.values = torch.cat(
                [_pad(mine.values, new - width), _pad(theirs.values, width - new)]
            )
        self._mask = torch.cat([_pad_mask(self._mask, new - width), _pad_mask(mask, width - new)])
        self._active.extend(sequences)

    def _picks(self, sequences: list[_Sequence], logits: torch.Tensor) -> list[int]:
        """Each sequence's next token from its row of ``logits`` (batch, 1, vocab)."""
        last = logits[:, -1]
        greedy: list[int] = last.argmax(dim=-1).tolist()
        return [
            greedy[row] if s.pick is None else s.pick(last[row]) for row, s in enumerate(sequences)
        ]

    def _cancelled(self, sequence: _Sequence) -> bool:
        if sequence.cancelled.is_set():
            sequence.out.put(Finished("cancelled", sequence.generated))
            return True
        return False

    def _step(self) -> None:
        """Decode one token for every sequence in the batch."""
        import torch

        assert self._mask is not None
        started = time.monotonic()
        device = self._model.device
        tokens = torch.tensor([[s.last] for s in self._active], device=device)
        positions = torch.tensor([[s.length] for s in self._active], device=device)
        self._mask = torch.cat([self._mask, self._mask.new_ones(len(self._active), 1)], dim=1)
        logits = self._forward(tokens, self._mask, positions, self._cache)
        keep: list[int] = []
        picks = self._picks(self._active, logits)
        for row, (sequence, token) in enumerate(zip(self._active, picks, strict=True)):
            sequence.length += 1
            if self._emit(sequence, token):
                keep.append(row)
        elapsed = time.monotonic() - started
        if elapsed > 0:
            rate = len(self._active) / elapsed
            self.tokens_per_s = (
                rate if not self.tokens_per_s else 0.9 * self.tokens_per_s + 0.1 * rate
            )
        if not keep:
            self._reset()
        elif len(keep) < len(self._active):
            self._active = [self._active[i] for i in keep]
            self._mask = _keep_rows(self._cache, self._mask, keep)

    def _emit(self, sequence: _Sequence, token: int) -> bool:
        """Hand ``token`` to the caller; False once the sequence is over."""
        if self._cancelled(sequence):
            return False
        sequence.generated += 1
        if token in self._eos:
            sequence.out.put(Finished("stop", sequence.generated))
            return False
        sequence.out.put(token)
        if sequence.generated >= sequence.max_new:
            sequence.out.put(Finished("length", sequence.generated))
            return False
        sequence.last = token
        return True

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor | None, cache: Any
    ) -> torch.Tensor:
        kwargs: dict[str, Any] = {self._cache_arg: cache, **self._last_only}
        if positions is not None:
            kwargs["position_ids"] = positions
        output = self._model(input_ids=ids, attention_mask=mask, use_cache=True, **kwargs)
        return output.logits  # type: ignore[no-any-return]


def _keep_rows(cache: Any, mask: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """Keep only ``rows`` of ``cache`` (in place) and ``mask``, then drop the columns in
    front that only padding still uses; returns the new mask."""
    import torch

    index = torch.tensor(rows, device=mask.device)
    mask = mask.index_select(0, index)
    used = mask.any(dim=0).nonzero()
    start = int(used[0]) if len(used) else 0
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, index)[:, :, start:]
        layer.values = layer.values.index_select(0, index)[:, :, start:]
    return mask[:, start:]


def _pad(tensor: torch.Tensor, count: int) -> torch.Tensor:
    """``tensor`` (batch, heads, length, dim) with ``count`` zero positions in front."""
    import torch

    if count <= 0:
        return tensor
    shape = (tensor.shape[0], tensor.shape[1], count, tensor.shape[3])
    return torch.cat([tensor.new_zeros(shape), tensor], dim=2)


def _pad_mask(mask: torch.Tensor, count: int) -> torch.Tensor:
    import torch

    if count <= 0:
        return mask
    return torch.cat([mask.new_zeros(mask.shape[0], count), mask], dim=1)
