"""The client core and both classes against the real local stack (proxy + backend + model):
order across many batches, empty and over-long inputs, dimensions, limits, local mode."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from privatemode_proxy._serving import free_port

from privatemode_integrations import (
    APIConnectionError,
    BadRequestError,
    EmbeddingsClient,
    InputTooLongError,
    PrivatemodeEmbedding,
    PrivatemodeEmbeddings,
)

LOCAL_MODEL = "all-minilm-l6-v2"
MANY = [f"note {i}: the {['red', 'green', 'blue'][i % 3]} fox number {i * 7}" for i in range(60)]
"""Small: the local model runs on CPU; 60 texts in batches of 7 is still 9 requests."""


@pytest.fixture
def client(local_stack: Any) -> Any:
    with EmbeddingsClient(base_url=local_stack.base_url, model=LOCAL_MODEL) as c:
        yield c


def test_order_preserved_across_many_batches(local_stack: Any, client: EmbeddingsClient) -> None:
    whole = client.embed(MANY)  # as few requests as the limits allow: one here
    with EmbeddingsClient(
        base_url=local_stack.base_url, model=LOCAL_MODEL, batch_size=7, max_concurrency=4
    ) as split_client:
        split = split_client.embed(MANY)
    assert whole.shape == split.shape == (60, 384)
    np.testing.assert_allclose(split, whole, atol=1e-5)
    for i in (0, 1, 30, 59):  # and each equals the text embedded alone
        np.testing.assert_allclose(client.embed([MANY[i]])[0], whole[i], atol=1e-5)


async def test_order_preserved_across_many_batches_async(local_stack: Any) -> None:
    lc = PrivatemodeEmbeddings(
        base_url=local_stack.base_url, model=LOCAL_MODEL, batch_size=9, max_concurrency=3
    )
    split = await lc.aembed_documents(MANY)
    whole = PrivatemodeEmbeddings(base_url=local_stack.base_url, model=LOCAL_MODEL)
    np.testing.assert_allclose(split, whole.embed_documents(MANY), atol=1e-5)


def test_limits_for_the_local_model(client: EmbeddingsClient) -> None:
    limits = client.limits()
    assert limits.max_tokens_per_input == 256
    assert limits.max_inputs_per_request >= 1 and limits.source in ("server", "catalogue")


def test_empty_string_is_embedded_in_place(client: EmbeddingsClient) -> None:
    texts = ["a sentence", "", "another sentence", ""]
    vectors = client.embed(texts)
    alone = client.embed([""])[0]
    assert vectors.shape == (4, 384)
    np.testing.assert_allclose(vectors[1], alone, atol=1e-5)
    np.testing.assert_allclose(vectors[3], alone, atol=1e-5)
    assert abs(np.linalg.norm(alone) - 1.0) < 1e-4  # a real unit vector, not zeros
    np.testing.assert_allclose(vectors[0], client.embed(["a sentence"])[0], atol=1e-5)


def test_over_long_text_fails_naming_its_index(local_stack: Any) -> None:
    texts = [f"short text {i}" for i in range(8)]
    texts[5] = "confidential " * 400  # far over all-MiniLM-L6-v2's 256 tokens
    with EmbeddingsClient(
        base_url=local_stack.base_url, model=LOCAL_MODEL, batch_size=3, max_concurrency=1
    ) as client:
        with pytest.raises(InputTooLongError) as info:
            client.embed(texts)
    error = info.value
    assert error.status_code == 400 and error.input_index == 5
    assert "input 5" in str(error) and "256" in str(error)
    assert "confidential" not in str(error)  # the text itself is never echoed


async def test_over_long_text_fails_naming_its_index_async(local_stack: Any) -> None:
    texts = ["fine"] * 4 + ["word " * 1000]
    embed = PrivatemodeEmbedding(base_url=local_stack.base_url, model_name=LOCAL_MODEL)
    with pytest.raises(InputTooLongError) as info:
        await embed.aget_text_embedding_batch(texts)
    assert info.value.input_index == 4


def test_dimensions(local_stack: Any) -> None:
    full = PrivatemodeEmbeddings(base_url=local_stack.base_url, model=LOCAL_MODEL, dimensions=384)
    assert len(full.embed_query("x")) == 384
    reduced = PrivatemodeEmbeddings(base_url=local_stack.base_url, model=LOCAL_MODEL, dimensions=64)
    with pytest.raises(BadRequestError, match="dimensions"):
        reduced.embed_query("x")


def test_local_mode_only_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without local mode nothing is started in the background: an unreachable proxy is an error.
    monkeypatch.setenv("PRIVATEMODE_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    plain = PrivatemodeEmbeddings(max_retries=0)
    assert plain.model == "qwen3-embedding-4b"
    with pytest.raises(APIConnectionError):
        plain.embed_query("x")


def test_local_helpers_share_one_stack() -> None:
    from privatemode_integrations import _local

    lc = PrivatemodeEmbeddings.local()
    li = PrivatemodeEmbedding.local(embed_batch_size=64)
    core = EmbeddingsClient.local()
    assert lc.base_url == li.base_url == core.base_url
    assert lc.model == li.model_name == core.model == LOCAL_MODEL
    vector = lc.embed_query("hello")
    np.testing.assert_allclose(vector, li.get_query_embedding("hello"), atol=1e-6)
    np.testing.assert_allclose(vector, core.embed(["hello"])[0], atol=1e-6)
    stack = _local._stack
    assert stack is not None
    assert PrivatemodeEmbeddings.local().base_url == lc.base_url and _local._stack is stack
    with pytest.raises(ValueError, match="base_url"):
        PrivatemodeEmbeddings.local(base_url="http://elsewhere/v1")
