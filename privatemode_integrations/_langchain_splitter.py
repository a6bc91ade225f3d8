"""LangChain: a `RecursiveCharacterTextSplitter` whose chunks fit the embedding model."""

from __future__ import annotations

from typing import Any

from langchain_text_splitters import RecursiveCharacterTextSplitter

from privatemode_integrations._splitting import ChunkPlan, refit


class ModelTextSplitter(RecursiveCharacterTextSplitter):
    """Splits on paragraphs, lines, words, then characters, measuring with the model's tokens.

    Made by `PrivatemodeEmbeddings.text_splitter()`; every chunk it returns is at most
    `chunk_tokens` tokens as the model counts them (special tokens included), so it is never
    refused as too long.
    """

    def __init__(self, plan: ChunkPlan, **kwargs: Any) -> None:
        super().__init__(
            chunk_size=plan.content_budget,
            chunk_overlap=plan.overlap,
            length_function=plan.counter.content_tokens,
            **kwargs,
        )
        self.plan = plan

    def split_text(self, text: str) -> list[str]:
        return refit(super().split_text(text), self.plan.fits)
