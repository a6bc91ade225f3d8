"""Resuming an interrupted ingestion: only the remainder goes upstream.

The recipe (docs/integrations.md, "Long ingestions"): LangChain's `CacheBackedEmbeddings` over a
byte store on disk, or LlamaIndex's `IngestionPipeline` with a persisted `IngestionCache`, run
over fixed chunks. The interruption is a KeyboardInterrupt (Ctrl-C) raised inside the HTTP
client as the third request goes out; the count of `/v1/embeddings` requests that reached the
backend proves what was sent again.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from langchain_classic.embeddings import CacheBackedEmbeddings
from langchain_classic.storage import LocalFileStore
from llama_index.core.ingestion import IngestionCache, IngestionPipeline
from llama_index.core.schema import TextNode
from pacing_helpers import MODEL, PacedStack

from privatemode_integrations import PrivatemodeEmbedding, PrivatemodeEmbeddings

TEXTS = [
    f"Chapter {i}: confidential ingestion resumes where it stopped ({i * 31 % 97})."
    for i in range(60)
]


def _interrupting_client(after: int) -> httpx.Client:
    """An HTTP client whose request number `after + 1` is interrupted as by Ctrl-C."""
    sent = 0

    def hook(request: httpx.Request) -> None:
        nonlocal sent
        if request.url.path.endswith("/embeddings"):
            sent += 1
            if sent > after:
                raise KeyboardInterrupt

    return httpx.Client(event_hooks={"request": [hook]}, timeout=120)


def test_langchain_cache_backed_embeddings_resume(
    make_stack: type[PacedStack], tmp_path: Path
) -> None:
    stack = make_stack()
    store_dir = tmp_path / "embeddings-cache"

    def cached(http_client: httpx.Client | None) -> CacheBackedEmbeddings:
        underlying = PrivatemodeEmbeddings(
            base_url=stack.base_url, model=MODEL, http_client=http_client
        )
        return CacheBackedEmbeddings.from_bytes_store(
            underlying,
            LocalFileStore(store_dir),
            namespace=MODEL,
            batch_size=10,
            key_encoder="sha256",
        )

    with pytest.raises(KeyboardInterrupt):
        cached(_interrupting_client(after=2)).embed_documents(TEXTS)
    assert stack.upstream_embeddings() == 2  # 20 texts embedded and stored before Ctrl-C
    vectors = np.asarray(cached(None).embed_documents(TEXTS))
    assert stack.upstream_embeddings() == 2 + 4  # only the remaining 40 texts, 10 per call
    fresh = np.asarray(
        PrivatemodeEmbeddings(base_url=stack.base_url, model=MODEL).embed_documents(TEXTS)
    )
    np.testing.assert_allclose(vectors, fresh, atol=1e-5)


def _ingest(embed_model: PrivatemodeEmbedding, cache_path: Path, chunk: int = 10) -> list[TextNode]:
    """The LlamaIndex recipe: fixed chunks, the cache persisted after each one."""
    cache = (
        IngestionCache.from_persist_path(str(cache_path))
        if cache_path.exists()
        else IngestionCache()
    )
    pipeline = IngestionPipeline(transformations=[embed_model], cache=cache)
    out: list[TextNode] = []
    for start in range(0, len(TEXTS), chunk):
        nodes = [
            TextNode(text=t, id_=f"doc-{start + i}")
            for i, t in enumerate(TEXTS[start : start + chunk])
        ]
        out.extend(pipeline.run(nodes=nodes))  # type: ignore[arg-type]
        pipeline.cache.persist(str(cache_path))
    return out


def test_llamaindex_ingestion_pipeline_cache_resume(
    make_stack: type[PacedStack], tmp_path: Path
) -> None:
    stack = make_stack()
    cache_path = tmp_path / "llama-cache.json"

    def model(client: httpx.Client | None) -> PrivatemodeEmbedding:
        return PrivatemodeEmbedding(base_url=stack.base_url, model_name=MODEL, http_client=client)

    with pytest.raises(KeyboardInterrupt):
        _ingest(model(_interrupting_client(after=3)), cache_path)
    assert stack.upstream_embeddings() == 3
    nodes = _ingest(model(None), cache_path)
    assert stack.upstream_embeddings() == 3 + 3  # chunks 4..6 only
    vectors = np.asarray([n.embedding for n in nodes])
    fresh = np.asarray(model(None).get_text_embedding_batch(TEXTS))
    np.testing.assert_allclose(vectors, fresh, atol=1e-5)
