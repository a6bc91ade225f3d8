"""Chunk sizes that fit the model, shared by both frameworks' splitters.

Each framework's own splitter does the cutting (LangChain's `RecursiveCharacterTextSplitter`,
LlamaIndex's `SentenceSplitter`), with lengths measured by `TokenCounter`: the model's own
tokenizer where we ship it, else UTF-8 bytes (an upper bound on byte-level BPE tokens). Those
splitters add up the lengths of pieces, which is close to, but not always exactly, the length
of the joined text; `refit` checks every chunk as the model will see it and cuts again any
that is still too long, so no chunk is ever refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from privatemode_integrations._batching import catalogue_limits
from privatemode_integrations._tokens import SPECIAL_TOKENS, TokenCounter

BOUNDED_DEFAULT_CHUNK = 1024
"""Default chunk length for a model whose tokenizer we don't ship, in the byte bound's units
(about 1,000 characters of English, about 250 real tokens: a usual RAG chunk)."""


@dataclass(frozen=True)
class ChunkPlan:
    """How long chunks for one model may be, and how to measure them."""

    counter: TokenCounter
    max_input_tokens: int
    """What the model accepts per input, special tokens included."""
    chunk_tokens: int
    """Most tokens (or, without the tokenizer, bytes) per chunk as embedded, specials included."""
    overlap: int

    @property
    def content_budget(self) -> int:
        """`chunk_tokens` less the model's special tokens: what a splitter may fill."""
        return self.chunk_tokens - SPECIAL_TOKENS

    def fits(self, text: str) -> bool:
        return self.counter.input_tokens([text])[0] <= self.chunk_tokens


def chunk_plan(model: str, chunk_tokens: int | None, overlap: int | None) -> ChunkPlan:
    """Validate the caller's sizes against the model's limit, or choose defaults.

    Defaults: chunks as long as the model takes (the local model: 256 tokens) when we count
    exactly, else `BOUNDED_DEFAULT_CHUNK` bytes; an overlap of an eighth of a chunk.
    """
    counter = TokenCounter(model)
    limit = catalogue_limits(model).max_tokens_per_input
    if chunk_tokens is None:
        chunk_tokens = limit if counter.exact else min(limit, BOUNDED_DEFAULT_CHUNK)
    if not SPECIAL_TOKENS + 8 <= chunk_tokens <= limit:
        raise ValueError(
            f"chunk_tokens must be between {SPECIAL_TOKENS + 8} and {limit} for model "
            f"'{model}' (its limit per input), got {chunk_tokens}"
        )
    if overlap is None:
        overlap = chunk_tokens // 8
    if not 0 <= overlap < chunk_tokens // 2:
        raise ValueError(f"overlap must be >= 0 and under half of chunk_tokens, got {overlap}")
    return ChunkPlan(counter, limit, chunk_tokens, overlap)


def refit(chunks: Iterable[str], fits: Callable[[str], bool]) -> list[str]:
    """`chunks`, with any that does not fit cut again (at the space nearest its middle)."""
    out: list[str] = []
    pending = list(chunks)
    pending.reverse()
    while pending:
        chunk = pending.pop()
        if fits(chunk) or len(chunk) <= 1:
            out.append(chunk)
            continue
        middle = len(chunk) // 2
        left_space, right_space = chunk.rfind(" ", 0, middle), chunk.find(" ", middle)
        candidates = [i for i in (left_space, right_space) if 0 < i < len(chunk) - 1]
        cut = min(candidates, key=lambda i: abs(i - middle)) if candidates else middle
        head, tail = chunk[:cut].strip(), chunk[cut:].strip()
        pending.extend(part for part in (tail, head) if part)
    return out
