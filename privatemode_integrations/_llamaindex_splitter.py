"""LlamaIndex: a `SentenceSplitter` whose nodes fit the embedding model, metadata included."""

from __future__ import annotations

from typing import Any

from llama_index.core.node_parser import SentenceSplitter
from pydantic import PrivateAttr

from privatemode_integrations._splitting import ChunkPlan, refit
from privatemode_integrations._tokens import TokenCounter

_FORMAT_TOKENS = 2
"""Room for the blank line LlamaIndex puts between a node's metadata and its text."""


class _Tokens:
    """`SentenceSplitter`'s tokenizer: a list as long as the text's tokens (or byte bound)."""

    def __init__(self, counter: TokenCounter) -> None:
        self.counter = counter

    def __call__(self, text: str) -> list[int]:
        return [0] * self.counter.content_tokens(text)


class ModelNodeParser(SentenceSplitter):
    """Splits documents into nodes by sentences, measuring with the model's tokens.

    Made by `PrivatemodeEmbedding.node_parser()`. LlamaIndex embeds a node's metadata with its
    text (e.g. `file_path: ...`); the budget for the text is what remains, and every node is
    checked as the model will see it, so none is refused as too long.
    """

    _plan: ChunkPlan = PrivateAttr()
    _options: dict[str, Any] = PrivateAttr()

    def __init__(self, plan: ChunkPlan, **kwargs: Any) -> None:
        super().__init__(
            chunk_size=plan.content_budget - _FORMAT_TOKENS,
            chunk_overlap=plan.overlap,
            tokenizer=_Tokens(plan.counter),
            **kwargs,
        )
        self._plan = plan
        self._options = kwargs

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its arguments in a worker process: SentenceSplitter's own pickling drops
        # its split functions and leaves a parser that cannot split.
        return (_rebuild, (self._plan, self._options))

    def split_text(self, text: str) -> list[str]:
        return refit(super().split_text(text), self._plan.fits)

    def split_text_metadata_aware(self, text: str, metadata_str: str) -> list[str]:
        chunks = super().split_text_metadata_aware(text, metadata_str)
        if not metadata_str:
            return refit(chunks, self._plan.fits)
        return refit(chunks, lambda chunk: self._plan.fits(f"{metadata_str}\n\n{chunk}"))


def _rebuild(plan: ChunkPlan, options: dict[str, Any]) -> ModelNodeParser:
    return ModelNodeParser(plan, **options)
