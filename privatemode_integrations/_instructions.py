"""Query instructions: what instruction-tuned embedding models expect in front of a query.

Qwen3-Embedding was trained with queries written as `Instruct: <task>\nQuery:<query>` (its model
card's prompt, also what Privatemode's embeddings doc shows) and documents as they are; without
the instruction, retrieval quality drops by a few points. Models without such training (the
local MiniLM) get the query unchanged.
"""

from __future__ import annotations

DEFAULT_QUERY_INSTRUCTION = (
    "Given a web search query, retrieve relevant passages that answer the query"
)
"""Qwen3-Embedding's own retrieval task description (its model card's `query` prompt)."""

_INSTRUCTED_MODELS = ("qwen3-embedding",)
"""Model id prefixes of models trained with `Instruct: ...\\nQuery:` queries."""


def uses_query_instruction(model: str) -> bool:
    """Whether `model` expects its queries to carry an instruction."""
    return model.lower().startswith(_INSTRUCTED_MODELS)


def instructed_query(query: str, model: str, instruction: str | None) -> str:
    """`query` as `model` expects it: with `instruction` (a task description) in front when the
    model was trained so and an instruction is set; else unchanged."""
    if not instruction or not uses_query_instruction(model):
        return query
    return f"Instruct: {instruction}\nQuery:{query}"
