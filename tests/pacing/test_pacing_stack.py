"""Pacing against a real limiter: the local backend's rate limit, through the real proxy.

Windows are a second or two. Assertions count requests and 429s, never seconds of wall clock
(bench/bench_ratelimit.py measures the time against the theoretical minimum).
"""

from __future__ import annotations

import asyncio
import math
import time

import httpx
import numpy as np
from pacing_helpers import MODEL, PacedStack, post
from privatemode_proxy._pacing import RateLimits
from privatemode_proxy.local import RateLimit

from privatemode_integrations import PrivatemodeEmbeddings


def _texts(n: int) -> list[str]:
    return [
        f"Document {i}: the proxy paces requests per API key so that a long ingestion "
        f"never draws a 429 from the service, number {i * 7919 % 1000}."
        for i in range(n)
    ]


def test_backend_rate_limit_answers_429_with_retry_after(make_stack: type[PacedStack]) -> None:
    stack = make_stack(backend_limit=RateLimit(requests=2, window_seconds=30))
    for _ in range(2):
        assert post(stack, {"model": MODEL, "input": "hello"}).status_code == 200
    refused = post(stack, {"model": MODEL, "input": "hello"})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    assert stack.refused() == 1 and stack.admitted() == 2


def test_backend_rate_limit_tokens(make_stack: type[PacedStack]) -> None:
    stack = make_stack(backend_limit=RateLimit(tokens=40, window_seconds=30))
    text = "one two three four five six seven eight nine ten"  # 12 tokens with [CLS] [SEP]
    assert post(stack, {"model": MODEL, "input": [text, text, text]}).status_code == 200
    refused = post(stack, {"model": MODEL, "input": [text]})
    assert refused.status_code == 429
    assert "40 tokens" in refused.json()["error"]["message"]


def test_paced_ingestion_draws_no_429_and_few_requests(make_stack: type[PacedStack]) -> None:
    window, tokens_per_window = 1.0, 600
    stack = make_stack(
        backend_limit=RateLimit(requests=3, tokens=tokens_per_window, window_seconds=window),
        rate_limits=RateLimits(
            requests=3, tokens=tokens_per_window, window_seconds=window, margin_seconds=0.25
        ),
    )
    texts = _texts(120)
    counts = stack.backend.engine.count_tokens(texts)
    embeddings = PrivatemodeEmbeddings(base_url=stack.base_url, model=MODEL, max_retries=0)
    vectors = np.asarray(embeddings.embed_documents(texts))
    assert vectors.shape == (120, 384)
    assert stack.refused() == 0  # not one 429 from the limiter
    # One client request, split by the proxy into windows' worth of tokens: the fewest requests
    # the token budget allows (each within one text of the budget).
    fewest = math.ceil(sum(counts) / tokens_per_window)
    assert (
        fewest
        <= stack.upstream_embeddings()
        <= math.ceil(sum(counts) / (tokens_per_window - max(counts)))
    )
    alone = np.asarray(embeddings.embed_documents(texts[:3]))
    np.testing.assert_allclose(vectors[:3], alone, atol=1e-5)
    assert stack.refused() == 0


async def test_paced_concurrent_clients_draw_no_429(make_stack: type[PacedStack]) -> None:
    stack = make_stack(
        backend_limit=RateLimit(requests=4, window_seconds=1.0),
        rate_limits=RateLimits(requests=4, window_seconds=1.0, margin_seconds=0.25),
    )
    texts = _texts(12)
    async with httpx.AsyncClient(timeout=120) as client:

        async def one(text: str) -> httpx.Response:
            return await client.post(
                stack.proxy_url + "/v1/embeddings", json={"model": MODEL, "input": text}
            )

        answers = await asyncio.gather(*(one(t) for t in texts))
    assert [a.status_code for a in answers] == [200] * 12
    assert stack.refused() == 0 and stack.admitted() == 12


def test_unpaced_classes_finish_via_retry_after(make_stack: type[PacedStack]) -> None:
    # Default retries (2): after the first 429 the client waits the server's time and then sends
    # one request at a time, so its concurrent batches don't meet the limit together again.
    stack = make_stack(backend_limit=RateLimit(requests=3, window_seconds=1.0))
    texts = _texts(40)
    embeddings = PrivatemodeEmbeddings(
        base_url=stack.base_url, model=MODEL, batch_size=5, max_concurrency=4
    )
    vectors = np.asarray(embeddings.embed_documents(texts))
    assert stack.refused() > 0  # the limiter did refuse: the classes retried past it
    assert stack.admitted() == 8  # each batch embedded exactly once
    time.sleep(1.0)  # a fresh window for the reference call (not an assertion on time)
    expected = np.asarray(
        PrivatemodeEmbeddings(base_url=stack.base_url, model=MODEL).embed_documents(texts[:5])
    )
    np.testing.assert_allclose(vectors[:5], expected, atol=1e-5)


async def test_unpaced_async_classes_finish_via_retry_after(make_stack: type[PacedStack]) -> None:
    stack = make_stack(backend_limit=RateLimit(requests=3, window_seconds=1.0))
    texts = _texts(40)
    embeddings = PrivatemodeEmbeddings(
        base_url=stack.base_url, model=MODEL, batch_size=5, max_concurrency=4
    )
    vectors = np.asarray(await embeddings.aembed_documents(texts))
    assert vectors.shape == (40, 384)
    assert stack.refused() > 0
    assert stack.admitted() == 8


def test_client_that_would_wait_too_long_gets_429_at_once(make_stack: type[PacedStack]) -> None:
    stack = make_stack(rate_limits=RateLimits(requests=1, window_seconds=30.0))
    assert post(stack, {"model": MODEL, "input": "first"}).status_code == 200
    refused = post(stack, {"model": MODEL, "input": "second"}, **{"X-Stainless-Timeout": "10"})
    assert refused.status_code == 429
    body = refused.json()["error"]
    assert body["code"] == "rate_limit_exceeded" and body["type"] == "rate_limit_error"
    assert 25 <= int(refused.headers["retry-after"]) <= 31
    assert stack.upstream_embeddings() == 1  # the refused one never went upstream
    health = stack.health()["rate_limits"]
    assert health == [
        {
            "key": "no key",
            "window_seconds": 30.0,
            "requests_limit": 1,
            "requests_in_window": 1,
            "tokens_limit": None,
            "tokens_in_window": health[0]["tokens_in_window"],
            "queued": 0,
            "held_for_seconds": 0.0,
            "margin_seconds": 0.6,
            "granted": 1,
            "refused": 1,
            "upstream_429": 0,
        }
    ]
    page = httpx.get(stack.proxy_url + "/", timeout=10).text
    assert "Rate limit (no key)" in page and "1/1 requests" in page


def test_pacing_learns_the_limit_from_the_services_headers(make_stack: type[PacedStack]) -> None:
    # The proxy was told 100 requests per window; the service says 2 in its x-ratelimit headers.
    stack = make_stack(
        backend_limit=RateLimit(requests=2, window_seconds=30),
        rate_limits=RateLimits(requests=100, window_seconds=30.0),
    )
    assert post(stack, {"model": MODEL, "input": "a"}).status_code == 200
    assert post(stack, {"model": MODEL, "input": "b"}).status_code == 200
    third = post(stack, {"model": MODEL, "input": "c"}, **{"X-Stainless-Timeout": "5"})
    assert third.status_code == 429
    assert stack.refused() == 0  # refused by the proxy, not by the service
    assert stack.health()["rate_limits"][0]["requests_limit"] == 2


def test_pacing_off_by_default(make_stack: type[PacedStack]) -> None:
    stack = make_stack()
    assert post(stack, {"model": MODEL, "input": "x"}).status_code == 200
    assert "rate_limits" not in stack.health()


def test_tiny_client_timeout_refused_not_queued(make_stack: type[PacedStack]) -> None:
    stack = make_stack(rate_limits=RateLimits(requests=1, window_seconds=30.0))
    assert post(stack, {"model": MODEL, "input": "first"}).status_code == 200
    answer = post(stack, {"model": MODEL, "input": "x"}, **{"X-Stainless-Timeout": "0.5"})
    assert answer.status_code == 429
    assert stack.health()["rate_limits"][0]["queued"] == 0


def test_each_app_key_has_its_own_budget(make_stack: type[PacedStack]) -> None:
    key_a, key_b = "sk-pacing-app-a-0123456789", "sk-pacing-app-b-9876543210"
    stack = make_stack(
        backend_options={"api_keys": [key_a, key_b]},
        rate_limits=RateLimits(requests=1, window_seconds=30.0),
    )
    bearer_a = {"Authorization": f"Bearer {key_a}", "X-Stainless-Timeout": "5"}
    bearer_b = {"Authorization": f"Bearer {key_b}", "X-Stainless-Timeout": "5"}
    assert post(stack, {"model": MODEL, "input": "a"}, **bearer_a).status_code == 200
    assert post(stack, {"model": MODEL, "input": "a2"}, **bearer_a).status_code == 429
    assert post(stack, {"model": MODEL, "input": "b"}, **bearer_b).status_code == 200
    health = stack.health()
    entries = health["rate_limits"]
    assert len(entries) == 2
    assert sorted(e["refused"] for e in entries) == [0, 1]
    assert all(e["requests_in_window"] == 1 for e in entries)
    shown = (
        httpx.get(stack.proxy_url + "/healthz", timeout=10).text
        + httpx.get(stack.proxy_url + "/", timeout=10).text
    )
    for secret in (key_a, key_b, key_a[3:15], key_b[3:15]):
        assert secret not in shown
