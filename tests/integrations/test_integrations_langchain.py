"""LangChain: the standard suites (unmodified), then retrieval in vector stores."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from corpus import DOCUMENTS, QUERIES
from langchain_community.vectorstores import FAISS
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests
from pydantic import SecretStr

from privatemode_integrations import PrivatemodeEmbeddings

LOCAL_MODEL = "all-minilm-l6-v2"


class TestPrivatemodeEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[PrivatemodeEmbeddings]:
        return PrivatemodeEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": LOCAL_MODEL}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {
                "PRIVATEMODE_API_KEY": "pm-key-from-env",
                "PRIVATEMODE_BASE_URL": "http://proxy.internal:8080/v1",
            },
            {"model": "qwen3-embedding-4b"},
            {
                "api_key": "pm-key-from-env",
                "base_url": "http://proxy.internal:8080/v1",
                "model": "qwen3-embedding-4b",
            },
        )


class TestPrivatemodeEmbeddingsIntegration(EmbeddingsIntegrationTests):
    """The standard integration suite against the real proxy + local backend + model."""

    @pytest.fixture(autouse=True)
    def _proxy_url_from_env(self, local_stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        # The suite builds the model from `embedding_model_params` only; the proxy's URL comes
        # from the environment, exactly as a user would configure it.
        monkeypatch.setenv("PRIVATEMODE_BASE_URL", local_stack.base_url)

    @property
    def embeddings_class(self) -> type[PrivatemodeEmbeddings]:
        return PrivatemodeEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": LOCAL_MODEL}


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRIVATEMODE_BASE_URL", raising=False)
    monkeypatch.delenv("PRIVATEMODE_API_KEY", raising=False)
    embed = PrivatemodeEmbeddings()
    assert embed.model == "qwen3-embedding-4b"  # the real service's model, never the local one
    assert embed.base_url == "http://localhost:8080/v1"
    assert embed.api_key is None
    assert embed.max_retries == 2 and embed.max_concurrency >= 1
    assert PrivatemodeEmbeddings.model_fields["batch_size"].description  # fields are documented
    with pytest.raises(ValueError):
        PrivatemodeEmbeddings(max_concurrency=0)
    with pytest.raises(ValueError):
        PrivatemodeEmbeddings(not_a_field=1)
    assert isinstance(PrivatemodeEmbeddings(api_key="k").api_key, SecretStr)


def _retrieval_checks(store: Any) -> None:
    for query, expected in QUERIES.items():
        (top,) = store.similarity_search(query, k=1)
        assert top.page_content == DOCUMENTS[expected], query


@pytest.fixture
def local_embeddings(local_stack: Any) -> PrivatemodeEmbeddings:
    return PrivatemodeEmbeddings(base_url=local_stack.base_url, model=LOCAL_MODEL)


def test_in_memory_vector_store_retrieves_the_right_document(
    local_embeddings: PrivatemodeEmbeddings,
) -> None:
    store = InMemoryVectorStore.from_texts(DOCUMENTS, local_embeddings)
    _retrieval_checks(store)


async def test_in_memory_vector_store_async(local_embeddings: PrivatemodeEmbeddings) -> None:
    store = await InMemoryVectorStore.afrom_texts(DOCUMENTS, local_embeddings)
    for query, expected in QUERIES.items():
        (top,) = await store.asimilarity_search(query, k=1)
        assert top.page_content == DOCUMENTS[expected], query


def test_faiss_retrieves_the_right_document(local_embeddings: PrivatemodeEmbeddings) -> None:
    store = FAISS.from_texts(DOCUMENTS, local_embeddings)
    _retrieval_checks(store)


def test_sync_and_async_agree(local_embeddings: PrivatemodeEmbeddings) -> None:
    import asyncio

    sync = local_embeddings.embed_documents(DOCUMENTS)
    asyn = asyncio.run(local_embeddings.aembed_documents(DOCUMENTS))
    np.testing.assert_allclose(sync, asyn, atol=1e-6)
    query = local_embeddings.embed_query(DOCUMENTS[0])
    np.testing.assert_allclose(query, sync[0], atol=1e-6)
    assert len(query) == 384
    assert abs(np.linalg.norm(query) - 1.0) < 1e-4
