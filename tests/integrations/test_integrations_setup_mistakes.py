"""A new user's usual setup mistakes get an error that says what to change (issue 14, 7 and 8).

Against the real local stack's proxy (plain HTTP on 127.0.0.1), as a user would meet them.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from privatemode_integrations import (
    APIConnectionError,
    NotFoundError,
    PrivatemodeEmbedding,
    PrivatemodeEmbeddings,
)

LOCAL_MODEL = "all-minilm-l6-v2"


def test_base_url_without_v1_gets_a_hint(local_stack: Any) -> None:
    root = local_stack.base_url.removesuffix("/v1")
    with pytest.raises(NotFoundError) as info:
        PrivatemodeEmbeddings(base_url=root, model=LOCAL_MODEL).embed_query("x")
    message = str(info.value)
    assert "404" in message and "does not end in /v1" in message
    assert f"base_url='{root}/v1'" in message


def test_unknown_model_404_gets_no_url_hint(local_stack: Any) -> None:
    with pytest.raises(NotFoundError) as info:
        PrivatemodeEmbeddings(base_url=local_stack.base_url, model="no-such-model").embed_query("x")
    assert "no-such-model" in str(info.value) and "does not end in /v1" not in str(info.value)


def test_https_against_the_plain_http_proxy_says_so_without_retrying(local_stack: Any) -> None:
    https = local_stack.base_url.replace("http://", "https://")
    sent: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda r: sent.append(str(r.url))]})
    embeddings = PrivatemodeEmbeddings(
        base_url=https, model=LOCAL_MODEL, http_client=http, max_retries=3
    )
    with pytest.raises(APIConnectionError) as info:
        embeddings.embed_query("x")
    message = str(info.value)
    assert "does not speak HTTPS" in message and "is the proxy running" not in message
    assert f"base_url='{local_stack.base_url}'" in message
    assert info.value.attempts == 1 and len(sent) == 1  # a TLS mismatch is not retried
    http.close()


def test_llamaindex_accepts_model_as_the_model_name(local_stack: Any) -> None:
    embed = PrivatemodeEmbedding(base_url=local_stack.base_url, model=LOCAL_MODEL)
    assert embed.model_name == LOCAL_MODEL
    assert len(embed.get_query_embedding("x")) == 384  # not a 404 for the default qwen3
    assert PrivatemodeEmbedding.from_dict(embed.to_dict()).model_name == LOCAL_MODEL
    with pytest.raises(ValidationError, match="disagree"):
        PrivatemodeEmbedding(model=LOCAL_MODEL, model_name="qwen3-embedding-4b")


def test_unknown_keywords_are_refused_by_both_classes() -> None:
    with pytest.raises(ValidationError, match="modle"):
        PrivatemodeEmbedding(modle=LOCAL_MODEL)
    with pytest.raises(ValidationError, match="model_name"):
        PrivatemodeEmbeddings(model_name=LOCAL_MODEL)
