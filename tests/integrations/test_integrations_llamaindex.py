"""LlamaIndex: our own suite in the spirit of langchain-tests, then retrieval, on the local stack.

LlamaIndex has no standard suite for embeddings; these check the contract its base class relies
on: every sync and async hook, batch results in order, `class_name`, serialisation without the
key, instrumentation events, and use in `VectorStoreIndex`, `IngestionPipeline` and a retriever.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
from corpus import DOCUMENTS, QUERIES
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.embedding import (
    EmbeddingEndEvent,
    EmbeddingStartEvent,
)
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import TextNode
from pydantic import Field

from privatemode_integrations import PrivatemodeEmbedding

LOCAL_MODEL = "all-minilm-l6-v2"


@pytest.fixture
def embed(local_stack: Any) -> PrivatemodeEmbedding:
    return PrivatemodeEmbedding(base_url=local_stack.base_url, model_name=LOCAL_MODEL)


# ---- the class contract (no server needed) ------------------------------------------------


def test_class_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRIVATEMODE_BASE_URL", raising=False)
    monkeypatch.setenv("PRIVATEMODE_API_KEY", "pm-key-from-env")
    model = PrivatemodeEmbedding()
    assert isinstance(model, BaseEmbedding)
    assert PrivatemodeEmbedding.class_name() == "PrivatemodeEmbedding"
    assert model.model_name == "qwen3-embedding-4b"
    assert model.base_url == "http://localhost:8080/v1"
    assert model.embed_batch_size == 2048  # not LlamaIndex's 10
    assert model.api_key is not None and model.api_key.get_secret_value() == "pm-key-from-env"
    data = model.to_dict()
    assert data["class_name"] == "PrivatemodeEmbedding"
    assert "api_key" not in data and "pm-key-from-env" not in model.to_json()
    restored = PrivatemodeEmbedding.from_dict(data)  # the key comes back from the environment
    assert restored.model_name == model.model_name
    assert restored.api_key is not None
    with pytest.raises(ValueError):
        PrivatemodeEmbedding(embed_batch_size=0)


def test_pickles_for_worker_processes(scripted: Any) -> None:
    model = PrivatemodeEmbedding(
        base_url=scripted.base_url, model_name=scripted.model, api_key="pm-secret"
    )
    model.get_text_embedding("warm the connection pool")
    copy = pickle.loads(pickle.dumps(model))
    assert copy.get_text_embedding("x") == model.get_text_embedding("x")


# ---- hooks against the local stack --------------------------------------------------------


def test_sync_hooks(embed: PrivatemodeEmbedding) -> None:
    query = embed.get_query_embedding(DOCUMENTS[0])
    text = embed.get_text_embedding(DOCUMENTS[0])
    batch = embed.get_text_embedding_batch(DOCUMENTS)
    assert len(query) == 384 and isinstance(query[0], float)
    np.testing.assert_allclose(query, text, atol=1e-6)
    assert len(batch) == len(DOCUMENTS)
    np.testing.assert_allclose(batch[0], text, atol=1e-6)
    np.testing.assert_allclose(embed._get_text_embeddings(DOCUMENTS[:2]), batch[:2], atol=1e-6)


async def test_async_hooks(embed: PrivatemodeEmbedding) -> None:
    query = await embed.aget_query_embedding(DOCUMENTS[1])
    text = await embed.aget_text_embedding(DOCUMENTS[1])
    batch = await embed.aget_text_embedding_batch(DOCUMENTS)
    direct = await embed._aget_text_embeddings(DOCUMENTS)
    np.testing.assert_allclose(query, text, atol=1e-6)
    np.testing.assert_allclose(batch, direct, atol=1e-6)
    np.testing.assert_allclose(batch[1], text, atol=1e-6)
    sync = embed.get_text_embedding_batch(DOCUMENTS)
    np.testing.assert_allclose(batch, sync, atol=1e-6)


async def test_num_workers_and_small_batches_keep_order(local_stack: Any) -> None:
    model = PrivatemodeEmbedding(
        base_url=local_stack.base_url, model_name=LOCAL_MODEL, embed_batch_size=2, num_workers=3
    )
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(23)]
    reference = model.get_text_embedding_batch(texts)
    result = await model.aget_text_embedding_batch(texts)
    np.testing.assert_allclose(result, reference, atol=1e-6)
    for i in (0, 11, 22):
        np.testing.assert_allclose(result[i], model.get_text_embedding(texts[i]), atol=1e-5)


class _Collector(BaseEventHandler):
    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "TestCollector"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


def test_instrumentation_events(embed: PrivatemodeEmbedding) -> None:
    collector = _Collector()
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(collector)
    try:
        embed.get_text_embedding_batch(DOCUMENTS)
        embed.get_query_embedding("a query")
    finally:
        dispatcher.event_handlers.remove(collector)
    starts = [e for e in collector.events if isinstance(e, EmbeddingStartEvent)]
    ends = [e for e in collector.events if isinstance(e, EmbeddingEndEvent)]
    assert len(starts) == 2 and len(ends) == 2
    assert starts[0].model_dict["class_name"] == "PrivatemodeEmbedding"
    assert ends[0].chunks == DOCUMENTS and len(ends[0].embeddings) == len(DOCUMENTS)
    assert all("api_key" not in str(e.model_dict) for e in starts)


def test_instrumentation_events_per_batch(local_stack: Any) -> None:
    # One client call for the whole list, but LlamaIndex's events per embed_batch_size batch.
    embed = PrivatemodeEmbedding(
        base_url=local_stack.base_url, model_name=LOCAL_MODEL, embed_batch_size=2
    )
    collector = _Collector()
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(collector)
    try:
        batch = embed.get_text_embedding_batch(DOCUMENTS[:5])
    finally:
        dispatcher.event_handlers.remove(collector)
    starts = [e for e in collector.events if isinstance(e, EmbeddingStartEvent)]
    ends = [e for e in collector.events if isinstance(e, EmbeddingEndEvent)]
    assert len(starts) == 3 and len(ends) == 3
    assert [e.chunks for e in ends] == [DOCUMENTS[0:2], DOCUMENTS[2:4], DOCUMENTS[4:5]]
    assert [v for e in ends for v in e.embeddings] == batch


# ---- retrieval ----------------------------------------------------------------------------


def test_vector_store_index_retriever(embed: PrivatemodeEmbedding) -> None:
    index = VectorStoreIndex([TextNode(text=d) for d in DOCUMENTS], embed_model=embed)
    retriever = index.as_retriever(similarity_top_k=1)
    for query, expected in QUERIES.items():
        (top,) = retriever.retrieve(query)
        assert top.node.get_content() == DOCUMENTS[expected], query


async def test_vector_store_index_async_retriever(embed: PrivatemodeEmbedding) -> None:
    index = VectorStoreIndex(
        [TextNode(text=d) for d in DOCUMENTS], embed_model=embed, use_async=True
    )
    retriever = index.as_retriever(similarity_top_k=1)
    for query, expected in QUERIES.items():
        (top,) = await retriever.aretrieve(query)
        assert top.node.get_content() == DOCUMENTS[expected], query


def test_ingestion_pipeline_then_retrieval(embed: PrivatemodeEmbedding) -> None:
    pipeline = IngestionPipeline(
        transformations=[SentenceSplitter(chunk_size=64, chunk_overlap=0), embed]
    )
    nodes = pipeline.run(documents=[Document(text=d) for d in DOCUMENTS])
    assert len(nodes) == len(DOCUMENTS)
    assert all(n.embedding is not None and len(n.embedding) == 384 for n in nodes)
    index = VectorStoreIndex(nodes, embed_model=embed)
    retriever = index.as_retriever(similarity_top_k=1)
    for query, expected in QUERIES.items():
        (top,) = retriever.retrieve(query)
        assert top.node.get_content() == DOCUMENTS[expected], query


async def test_ingestion_pipeline_async(embed: PrivatemodeEmbedding) -> None:
    pipeline = IngestionPipeline(transformations=[embed])
    nodes = await pipeline.arun(documents=[Document(text=d) for d in DOCUMENTS])
    reference = embed.get_text_embedding_batch(DOCUMENTS)
    np.testing.assert_allclose([n.embedding for n in nodes], reference, atol=1e-6)
