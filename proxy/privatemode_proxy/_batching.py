"""Splitting a request into sub-requests that fit a model's per-request limits, and counting tokens.

Token counts are exact where we ship the model's tokenizer (the local model) and otherwise an
upper bound (`estimate_tokens`): a split may be finer than needed, never too coarse.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from privatemode_proxy._catalogue import LOCAL_MODEL_ID, ModelInfo, estimate_tokens
from privatemode_proxy._tokenizer import load_local_tokenizer

logger = logging.getLogger(__name__)

TokenCounter = Callable[[Sequence[str]], list[int]]
"""Counts the tokens of each text (untruncated, special tokens included)."""


@dataclass(frozen=True)
class BatchLimits:
    """Limits the proxy applies on top of the catalogue's (the smaller one wins)."""

    max_inputs_per_request: int | None = None
    max_tokens_per_request: int | None = None
    max_concurrent_subrequests: int = 4
    """How many sub-requests of one client request are in flight upstream at once."""

    def __post_init__(self) -> None:
        for name in ("max_inputs_per_request", "max_tokens_per_request"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.max_concurrent_subrequests < 1:
            raise ValueError("max_concurrent_subrequests must be at least 1")

    def inputs_for(self, model: ModelInfo) -> int:
        return _smaller(model.max_inputs_per_request, self.max_inputs_per_request)

    def tokens_for(self, model: ModelInfo) -> int:
        return _smaller(model.max_tokens_per_request, self.max_tokens_per_request)


def _smaller(catalogue_value: int, override: int | None) -> int:
    return catalogue_value if override is None else min(catalogue_value, override)


def split_batches(
    token_counts: Sequence[int], *, max_inputs: int, max_tokens: int
) -> list[tuple[int, int]]:
    """Contiguous `[start, end)` ranges, in order, each within both limits.

    Greedy: a range grows until the next input would break a limit. An input that alone exceeds
    `max_tokens` gets a range of its own (upstream then judges it; splitting can't help).
    """
    ranges: list[tuple[int, int]] = []
    start = 0
    tokens = 0
    for i, count in enumerate(token_counts):
        size = i - start
        if size and (size >= max_inputs or tokens + count > max_tokens):
            ranges.append((start, i))
            start, tokens = i, 0
        tokens += count
    if start < len(token_counts):
        ranges.append((start, len(token_counts)))
    return ranges


def estimate_token_counts(texts: Sequence[str]) -> list[int]:
    """Upper bounds for tokenizers we don't ship (see `estimate_tokens`)."""
    return [estimate_tokens(t) for t in texts]


class _LazyLocalTokenCounter:
    """Exact counts for the local model with the tokenizer the local engine uses.

    Loaded on first use; when the local extra isn't installed the proxy falls back to estimates,
    which over-count and so stay safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counter: TokenCounter | None = None
        self._loaded = False

    def _load(self) -> TokenCounter | None:
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    self._counter = _load_local_counter()
                    self._loaded = True
        return self._counter

    @property
    def is_exact(self) -> bool:
        """Whether the tokenizer loaded (else counts are upper-bound estimates)."""
        return self._load() is not None

    def __call__(self, texts: Sequence[str]) -> list[int]:
        counter = self._load()
        if counter is None:
            return estimate_token_counts(texts)
        return counter(texts)


def _load_local_counter() -> TokenCounter | None:
    """The local model's own tokenizer, untruncated and unpadded (no model weights loaded)."""
    tokenizer = load_local_tokenizer()
    if tokenizer is None:
        return None

    def count(texts: Sequence[str]) -> list[int]:
        return [len(e) for e in tokenizer.encode_batch_fast(list(texts))] if texts else []

    return count


def default_token_counters() -> dict[str, TokenCounter]:
    """Exact counters for the models whose tokenizer we ship."""
    return {LOCAL_MODEL_ID: _LazyLocalTokenCounter()}


def exact_counter_for(
    model: ModelInfo, counters: Mapping[str, TokenCounter]
) -> TokenCounter | None:
    """The exact counter of `model`, if we ship its tokenizer and it loaded."""
    counter = counters.get(model.id) if model.tokenizer_shipped else None
    if counter is None or not getattr(counter, "is_exact", True):
        return None
    return counter


MAX_BYTES_PER_TOKEN = 32
"""No real text averages more UTF-8 bytes per token than this, so an input longer than
`max_tokens_per_input * MAX_BYTES_PER_TOKEN` bytes is too long without counting its tokens (a
20 MiB text took 18 s and 1.6 GB to tokenize, holding up everyone)."""


def input_byte_bound(model: ModelInfo) -> int:
    """The longest input, in UTF-8 bytes, that `model` is asked to take."""
    return model.max_tokens_per_input * MAX_BYTES_PER_TOKEN


@dataclass(frozen=True)
class TokenPlan:
    """Per-input token counts used for splitting, and the inputs over the per-input limit."""

    counts: list[int]
    """Exact where counted, else upper bounds."""
    too_long: list[tuple[int, int]]
    """(index, exact count) of inputs over the model's per-input limit."""
    too_large: list[tuple[int, int]] = field(default_factory=list)
    """(index, UTF-8 bytes) of inputs over the byte bound; these were not tokenized."""


def plan_tokens(
    model: ModelInfo,
    texts: Sequence[str],
    max_tokens_per_request: int,
    counters: Mapping[str, TokenCounter],
) -> TokenPlan:
    """Count tokens only as far as the limits need.

    Everything starts from the byte-length upper bound. With a shipped tokenizer, exact counts
    replace it where a bound could break a limit: the inputs whose bound is over the per-input
    limit, or all inputs when the bounds add up to more than one request may carry. Without one,
    the bounds are used as they are (never an under-count).
    """
    counts = estimate_token_counts(texts)
    bound = input_byte_bound(model) + 2  # the estimate adds 2 special tokens
    too_large = [(i, n - 2) for i, n in enumerate(counts) if n > bound]
    if too_large:
        return TokenPlan(counts, [], too_large)
    counter = exact_counter_for(model, counters)
    if counter is None:
        return TokenPlan(counts, [])
    suspects: Sequence[int]
    if sum(counts) > max_tokens_per_request:
        counts = list(counter(texts))
        suspects = range(len(counts))
    else:
        suspects = [i for i, n in enumerate(counts) if n > model.max_tokens_per_input]
        if suspects:
            for i, n in zip(suspects, counter([texts[i] for i in suspects]), strict=True):
                counts[i] = n
    too_long = [(i, counts[i]) for i in suspects if counts[i] > model.max_tokens_per_input]
    return TokenPlan(counts, too_long)
