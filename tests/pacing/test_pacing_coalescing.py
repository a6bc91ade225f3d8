"""Coalescing: many small concurrent requests ride in few upstream requests, each client gets
exactly its own vectors and usage, and a bad input fails only its own client."""

from __future__ import annotations

import asyncio
import math

import httpx
import numpy as np
import pytest
from pacing_helpers import MODEL, PacedStack
from privatemode_proxy._coalescing import (
    Coalescer,
    CoalescingConfig,
    PackAnswer,
    apportion,
    coalescing_for,
)
from privatemode_proxy._pacing import RateLimits
from privatemode_proxy.local import RateLimit

from privatemode_integrations import PrivatemodeEmbeddings

QUESTIONS = [f"What does clause {i} of the contract say about data retention?" for i in range(30)]


async def _ask_all(stack: PacedStack, inputs: list[object]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=120) as client:
        return await asyncio.gather(
            *(
                client.post(stack.proxy_url + "/v1/embeddings", json={"model": MODEL, "input": x})
                for x in inputs
            )
        )


async def test_concurrent_one_text_clients_share_few_upstream_requests(
    make_stack: type[PacedStack],
) -> None:
    stack = make_stack(proxy_options={"coalescing": CoalescingConfig(window_seconds=0.05)})
    answers = await _ask_all(stack, list(QUESTIONS))
    assert [a.status_code for a in answers] == [200] * len(QUESTIONS)
    assert stack.upstream_embeddings() <= 5  # 30 clients
    expected = stack.backend.engine.embed(QUESTIONS)
    counts = stack.backend.engine.count_tokens(QUESTIONS)
    for i, answer in enumerate(answers):
        body = answer.json()
        assert len(body["data"]) == 1 and body["data"][0]["index"] == 0
        np.testing.assert_allclose(body["data"][0]["embedding"], expected[i], atol=1e-5)
        # Exact counts for the local model: each client's share is its own count.
        assert body["usage"]["prompt_tokens"] == counts[i]
    assert sum(a.json()["usage"]["prompt_tokens"] for a in answers) == sum(counts)


async def test_bad_input_fails_only_its_client(make_stack: type[PacedStack]) -> None:
    stack = make_stack(proxy_options={"coalescing": CoalescingConfig(window_seconds=0.05)})
    too_long = "word " * 400  # over all-minilm-l6-v2's 256 tokens
    inputs: list[object] = [*QUESTIONS[:10], too_long, [1, 2, 3], *QUESTIONS[10:20]]
    answers = await _ask_all(stack, inputs)
    statuses = [a.status_code for a in answers]
    assert statuses == [200] * 10 + [400, 400] + [200] * 10
    assert answers[10].json()["error"]["code"] == "context_length_exceeded"
    expected = stack.backend.engine.embed(QUESTIONS[:20])
    good = [a for a in answers if a.status_code == 200]
    for answer, vector in zip(good, expected, strict=True):
        np.testing.assert_allclose(answer.json()["data"][0]["embedding"], vector, atol=1e-5)


async def test_coalescing_under_pacing_serves_many_clients_in_few_requests(
    make_stack: type[PacedStack],
) -> None:
    stack = make_stack(
        backend_limit=RateLimit(requests=2, window_seconds=1.0),
        rate_limits=RateLimits(requests=2, window_seconds=1.0, margin_seconds=0.25),
        proxy_options={"coalescing": CoalescingConfig(window_seconds=0.02)},
    )
    clients = [f"query number {i}" for i in range(50)]
    answers = await _ask_all(stack, list(clients))
    assert [a.status_code for a in answers] == [200] * 50
    assert stack.refused() == 0
    # 50 clients at 2 requests per window: without coalescing 25 windows; packed, a few requests.
    assert stack.upstream_embeddings() <= 4
    expected = stack.backend.engine.embed(clients)
    for answer, vector in zip(answers, expected, strict=True):
        np.testing.assert_allclose(answer.json()["data"][0]["embedding"], vector, atol=1e-5)


async def test_large_requests_are_not_packed(make_stack: type[PacedStack]) -> None:
    config = CoalescingConfig(window_seconds=0.05, max_inputs_per_client=4, max_tokens=400)
    stack = make_stack(proxy_options={"coalescing": config})
    long_text = "word " * 200  # ~200 tokens: half of a pack's 400
    inputs: list[object] = [QUESTIONS[:5], QUESTIONS[5:10], long_text, QUESTIONS[10], QUESTIONS[11]]
    answers = await _ask_all(stack, inputs)
    assert [a.status_code for a in answers] == [200] * 5
    assert [len(a.json()["data"]) for a in answers] == [5, 5, 1, 1, 1]
    assert stack.upstream_embeddings() == 4  # three alone, the last two together


class _InputError(Exception):
    pass


async def test_refused_pack_is_retried_member_by_member() -> None:
    """A stand-in upstream that refuses any request containing 'bad' as a bad request."""
    sent: list[list[str]] = []

    async def run(texts: list[str], deadline: float) -> PackAnswer:
        sent.append(list(texts))
        if "bad" in texts:
            raise _InputError("input refused")
        vectors = np.asarray([[float(len(t)), 1.0] for t in texts], dtype=np.float32)
        return PackAnswer(vectors, 10 * len(texts), None, "m")

    coalescer = Coalescer(CoalescingConfig(window_seconds=0.05))

    async def member(text: str) -> object:
        try:
            return await coalescer.submit(
                "key",
                [text],
                [10],
                deadline=1e12,
                run=run,
                is_input_error=lambda exc: isinstance(exc, _InputError),
                max_inputs=100,
                max_tokens=1000,
            )
        except _InputError as exc:
            return exc

    results = await asyncio.gather(member("aa"), member("bad"), member("cccc"))
    assert isinstance(results[1], _InputError)
    assert results[0].vectors.tolist() == [[2.0, 1.0]]  # type: ignore[attr-defined]
    assert results[2].vectors.tolist() == [[4.0, 1.0]]  # type: ignore[attr-defined]
    assert sent[0] == ["aa", "bad", "cccc"] and sorted(map(tuple, sent[1:])) == [
        ("aa",),
        ("bad",),
        ("cccc",),
    ]
    assert coalescer.stats.fallbacks == 1


async def test_pack_limits_start_a_new_pack() -> None:
    sizes: list[int] = []

    async def run(texts: list[str], deadline: float) -> PackAnswer:
        sizes.append(len(texts))
        return PackAnswer(np.zeros((len(texts), 2), dtype=np.float32), None, None, "m")

    coalescer = Coalescer(CoalescingConfig(window_seconds=0.05))
    await asyncio.gather(
        *(
            coalescer.submit(
                "k",
                ["t"],
                [30],
                deadline=1e12,
                run=run,
                is_input_error=lambda exc: False,
                max_inputs=100,
                max_tokens=100,  # three members of 30 tokens per pack
            )
            for _ in range(7)
        )
    )
    assert sorted(sizes) == [1, 3, 3]


@pytest.mark.parametrize(
    ("total", "weights"),
    [(100, [1, 1, 1]), (7, [3, 3, 1]), (0, [2, 5]), (13, [0, 0]), (101, [10, 20, 30, 40])],
)
def test_apportion_sums_exactly(total: int, weights: list[int]) -> None:
    shares = apportion(total, weights)
    assert sum(shares) == total and len(shares) == len(weights)
    if sum(weights):
        for share, weight in zip(shares, weights, strict=True):
            assert math.floor(total * weight / sum(weights)) <= share
            assert share <= math.ceil(total * weight / sum(weights))
    assert apportion(None, weights) == weights


def test_coalescing_defaults() -> None:
    assert coalescing_for(None, paced=True) == CoalescingConfig(window_seconds=0.02)
    assert coalescing_for(None, paced=False) is None
    assert coalescing_for(0, paced=True) is None
    assert coalescing_for(5, paced=False) == CoalescingConfig(window_seconds=0.005)
    with pytest.raises(ValueError, match="at least 1"):
        CoalescingConfig(max_inputs=0)


def test_progress_bar_requests_share_upstream_requests(make_stack: type[PacedStack]) -> None:
    # A shown progress bar splits one call into many requests; under a request limit they must
    # not each spend one of the key's requests.
    stack = make_stack(
        backend_limit=RateLimit(requests=3, window_seconds=1.0),
        rate_limits=RateLimits(requests=3, window_seconds=1.0, margin_seconds=0.25),
        proxy_options={"coalescing": CoalescingConfig()},
    )
    sent = 0

    def count(request: httpx.Request) -> None:
        nonlocal sent
        sent += request.url.path.endswith("/embeddings")

    texts = [f"Paragraph {i} of the handbook, about expenses and travel." for i in range(320)]
    embeddings = PrivatemodeEmbeddings(
        base_url=stack.base_url,
        model=MODEL,
        show_progress_bar=True,
        http_client=httpx.Client(event_hooks={"request": [count]}, timeout=120),
    )
    vectors = np.asarray(embeddings.embed_documents(texts))
    assert vectors.shape == (320, 384)
    assert sent >= 10  # the bar's steps
    assert stack.upstream_embeddings() <= sent // 2
    assert stack.refused() == 0
    np.testing.assert_allclose(vectors, stack.backend.engine.embed(texts), atol=1e-5)
