"""The official OpenAI client and langchain-openai work against the proxy unchanged."""

from __future__ import annotations

import numpy as np
import openai
import pytest
from _proxyhelpers import MODEL, post_embeddings
from langchain_openai import OpenAIEmbeddings
from privatemode_proxy import LocalStack

TEXTS = [
    "Privatemode encrypts prompts end to end.",
    "Die Katze schläft auf dem Sofa.",
    "Retrieval-augmented generation needs good embeddings.",
]


@pytest.fixture(scope="module")
def expected(local_stack: LocalStack) -> np.ndarray:
    resp = post_embeddings(local_stack.proxy_url, {"model": MODEL, "input": TEXTS})
    assert resp.status_code == 200
    return np.asarray([d["embedding"] for d in resp.json()["data"]], dtype=np.float32)


def test_openai_client_default_encoding(local_stack: LocalStack, expected: np.ndarray) -> None:
    client = openai.OpenAI(base_url=local_stack.base_url, api_key="not-needed-locally")
    result = client.embeddings.create(model=MODEL, input=TEXTS)  # the client asks for base64
    got = np.asarray([d.embedding for d in result.data], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert [d.index for d in result.data] == [0, 1, 2]
    assert result.model == MODEL
    assert result.usage.prompt_tokens > 0


def test_openai_client_float_and_single_input(
    local_stack: LocalStack, expected: np.ndarray
) -> None:
    client = openai.OpenAI(base_url=local_stack.base_url, api_key="x")
    result = client.embeddings.create(model=MODEL, input=TEXTS[1], encoding_format="float")
    assert len(result.data) == 1
    np.testing.assert_allclose(np.asarray(result.data[0].embedding), expected[1], atol=1e-6)


def test_openai_client_errors(local_stack: LocalStack) -> None:
    client = openai.OpenAI(base_url=local_stack.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MODEL, input="x", dimensions=64)
    assert "dimensions" in str(info.value)
    models = client.models.list()
    assert MODEL in [m.id for m in models.data]


async def test_openai_async_client(local_stack: LocalStack, expected: np.ndarray) -> None:
    client = openai.AsyncOpenAI(base_url=local_stack.base_url, api_key="x")
    try:
        result = await client.embeddings.create(model=MODEL, input=TEXTS)
    finally:
        await client.close()
    got = np.asarray([d.embedding for d in result.data], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_langchain_openai_embeddings(local_stack: LocalStack, expected: np.ndarray) -> None:
    embeddings = OpenAIEmbeddings(
        model=MODEL,
        base_url=local_stack.base_url,
        api_key="x",  # type: ignore[arg-type]
        check_embedding_ctx_length=False,
    )
    docs = embeddings.embed_documents(TEXTS)
    np.testing.assert_allclose(np.asarray(docs, dtype=np.float32), expected, atol=1e-6)
    query = embeddings.embed_query(TEXTS[2])
    np.testing.assert_allclose(np.asarray(query, dtype=np.float32), expected[2], atol=1e-6)


async def test_langchain_openai_async(local_stack: LocalStack, expected: np.ndarray) -> None:
    embeddings = OpenAIEmbeddings(
        model=MODEL,
        base_url=local_stack.base_url,
        api_key="x",  # type: ignore[arg-type]
        check_embedding_ctx_length=False,
    )
    docs = await embeddings.aembed_documents(TEXTS)
    np.testing.assert_allclose(np.asarray(docs, dtype=np.float32), expected, atol=1e-6)
