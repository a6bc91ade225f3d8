"""Over-long inputs are found before anything is sent, all of them at once (issue 14, item 3).

Against the real local stack: the client counts with the local model's own tokenizer, so its
verdict must match the backend's exactly (a text of 256 tokens is embedded, 257 is refused).
Requests are counted with an httpx event hook on the client's own connection pool.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from privatemode_integrations import (
    EmbeddingsClient,
    InputTooLongError,
    PrivatemodeEmbedding,
    PrivatemodeEmbeddings,
)
from privatemode_integrations._tokens import TokenCounter

LOCAL_MODEL = "all-minilm-l6-v2"


class RequestCounter:
    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)

    async def acall(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)


def _large_call() -> list[str]:
    texts = [f"ordinary paragraph number {i} about nothing in particular" for i in range(3000)]
    texts[17] = "confidential " * 300
    texts.append("a long appendix " * 200)  # the last one, after 3,000 good ones
    return texts


def test_whole_call_is_checked_before_any_request(local_stack: Any) -> None:
    counter = RequestCounter()
    http = httpx.Client(event_hooks={"request": [counter]})
    with EmbeddingsClient(
        base_url=local_stack.base_url, model=LOCAL_MODEL, http_client=http, batch_size=100
    ) as client:
        with pytest.raises(InputTooLongError) as info:
            client.embed(_large_call())
        assert counter.paths == []  # nothing sent, not even one batch of the good texts
        error = info.value
        assert error.input_indices == (17, 3000)
        assert error.input_index == 17 and error.attempts == 0 and error.status_code == 400
        message = str(error)
        assert "17 (" in message and "3000 (" in message and "2 of 3001" in message
        assert "256" in message and "Nothing was sent" in message and "text_splitter" in message
        assert "confidential" not in message and "appendix" not in message
        # The same client then embeds the good texts.
        good = [t for i, t in enumerate(_large_call()) if i not in (17, 3000)]
        assert client.embed(good).shape == (2999, 384)
        assert counter.paths and set(counter.paths) == {"/v1/embeddings"}
    http.close()


async def test_whole_call_is_checked_before_any_request_async(local_stack: Any) -> None:
    counter = RequestCounter()
    http = httpx.AsyncClient(event_hooks={"request": [counter.acall]})
    client = EmbeddingsClient(
        base_url=local_stack.base_url, model=LOCAL_MODEL, http_async_client=http
    )
    with pytest.raises(InputTooLongError) as info:
        await client.aembed(_large_call())
    assert info.value.input_indices == (17, 3000)
    assert counter.paths == []
    await http.aclose()


def test_framework_classes_check_before_sending(local_stack: Any) -> None:
    counter = RequestCounter()
    http = httpx.Client(event_hooks={"request": [counter]})
    texts = [*_large_call()[:40], "x " * 600]
    lc = PrivatemodeEmbeddings(base_url=local_stack.base_url, model=LOCAL_MODEL, http_client=http)
    with pytest.raises(InputTooLongError) as info:
        lc.embed_documents(texts)
    assert info.value.input_indices == (17, 40)
    li = PrivatemodeEmbedding(
        base_url=local_stack.base_url, model_name=LOCAL_MODEL, http_client=http
    )
    with pytest.raises(InputTooLongError):
        li.get_text_embedding_batch(texts)
    with pytest.raises(InputTooLongError):  # one text alone is checked too
        lc.embed_query("x " * 600)
    assert counter.paths == []
    http.close()


def test_client_count_agrees_with_the_backend_at_the_limit(local_stack: Any) -> None:
    """254 plain words + [CLS]/[SEP] is exactly 256 tokens: embedded; one word more: refused."""
    tokens = TokenCounter(LOCAL_MODEL)
    assert tokens.exact
    at_limit = " ".join(["river"] * 254)
    over = at_limit + " river"
    assert tokens.input_tokens([at_limit, over]) == [256, 257]
    assert local_stack.backend.engine.count_tokens([at_limit, over]) == [256, 257]
    counter = RequestCounter()
    http = httpx.Client(event_hooks={"request": [counter]})
    with EmbeddingsClient(
        base_url=local_stack.base_url, model=LOCAL_MODEL, http_client=http
    ) as client:
        assert client.embed([at_limit, "short"]).shape == (2, 384)
        sent = len(counter.paths)
        with pytest.raises(InputTooLongError) as info:
            client.embed(["short", over])
        assert "1 (257 tokens)" in str(info.value)
        assert len(counter.paths) == sent
    http.close()


def test_without_the_tokenizer_only_certain_cases_are_refused() -> None:
    """For Qwen3 (tokenizer not shipped) the client never refuses a text the model may take."""
    qwen = TokenCounter("qwen3-embedding-4b")
    assert not qwen.exact
    # 200,000 bytes could be 32,000 tokens or fewer: the server decides.
    assert qwen.too_long(["a" * 200_000], 32_000) == []
    assert qwen.may_be_too_long(["a" * 200_000, "short"], 32_000) == [0]
    # Upper bounds for cutting chunks: never fewer than the bytes.
    assert qwen.content_tokens("héllo") == len("héllo".encode())
    # A text longer than any run of tokens could cover is refused without asking.
    assert qwen.too_long(["a" * 5000], 4) == [(0, 5)]
