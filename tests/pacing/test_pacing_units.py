"""The pacing ledger on its own: any-window limits, FIFO queue, refusals, corrections, headers.

Windows are fractions of a second; the assertions are on the order and spacing of grants as the
pacer's own clock saw them, never on how long the test took.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from privatemode_proxy._pacing import (
    KeyPacer,
    Pacer,
    PacingRefused,
    RateLimits,
    client_patience,
    fit_ranges_to_budget,
    paced_send,
    parse_duration,
    parse_rate_headers,
)


def _max_in_any_window(times: list[float], weights: list[int], window: float) -> int:
    """The most weight any half-open window [t, t + window) holds, t at a grant."""
    best = 0
    for i, start in enumerate(times):
        best = max(
            best, sum(w for t, w in zip(times, weights, strict=True) if start <= t < start + window)
        )
        del i
    return best


async def _grant_times(pacer: KeyPacer, tokens: list[int]) -> list[float]:
    times: list[float] = [0.0] * len(tokens)

    async def one(i: int, n: int) -> None:
        await pacer.acquire(n, max_wait=30)
        times[i] = time.monotonic()

    await asyncio.gather(*(one(i, n) for i, n in enumerate(tokens)))
    return times


async def test_requests_per_any_window() -> None:
    limits = RateLimits(requests=3, window_seconds=0.3, margin_seconds=0.0)
    pacer = KeyPacer(limits, "k")
    times = await _grant_times(pacer, [1] * 10)
    assert _max_in_any_window(sorted(times), [1] * 10, 0.3) <= 3
    # Three at once, then three per window: not 10 at once.
    assert sorted(times)[3] - sorted(times)[0] >= 0.29


async def test_tokens_per_any_window_no_burst_past_it() -> None:
    # A token bucket of capacity 100 would let 60 + 40 through, then refill and burst again;
    # the sliding log keeps every 0.3 s window at or below 100.
    limits = RateLimits(tokens=100, window_seconds=0.3, margin_seconds=0.0)
    pacer = KeyPacer(limits, "k")
    tokens = [60, 40, 60, 40, 60, 40]
    times = await _grant_times(pacer, tokens)
    order = sorted(range(len(tokens)), key=lambda i: times[i])
    assert order == list(range(len(tokens)))  # FIFO
    assert _max_in_any_window([times[i] for i in order], tokens, 0.3) <= 100


async def test_refused_at_once_with_honest_retry_after() -> None:
    limits = RateLimits(requests=1, window_seconds=20.0, margin_seconds=0.0)
    pacer = KeyPacer(limits, "k")
    await pacer.acquire(1, max_wait=1)
    started = time.monotonic()
    with pytest.raises(PacingRefused) as info:
        await pacer.acquire(1, max_wait=5)
    assert time.monotonic() - started < 1  # no waiting before the refusal
    assert 19 <= info.value.retry_after <= 20
    assert info.value.headers()["Retry-After"] == "20"
    assert pacer.snapshot()["queued"] == 0
    assert pacer.stats.refused == 1


async def test_queue_bound() -> None:
    limits = RateLimits(requests=1, window_seconds=5.0, max_queue=2)
    pacer = KeyPacer(limits, "k")
    await pacer.acquire(1, max_wait=1)
    waiting = [asyncio.create_task(pacer.acquire(1, max_wait=60)) for _ in range(2)]
    await asyncio.sleep(0)
    assert pacer.queue_length == 2
    with pytest.raises(PacingRefused, match="already wait"):
        await pacer.acquire(1, max_wait=60)
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert pacer.queue_length == 0  # a client that leaves makes room


async def test_settle_with_reported_usage_frees_budget() -> None:
    limits = RateLimits(tokens=100, window_seconds=30.0, margin_seconds=0.0)
    pacer = KeyPacer(limits, "k")
    grant = await pacer.acquire(90, max_wait=1)  # an over-estimate
    with pytest.raises(PacingRefused):
        await pacer.acquire(50, max_wait=1)
    grant.settle(30)  # the service counted 30
    second = await pacer.acquire(50, max_wait=1)
    assert second.waited < 1
    assert pacer.snapshot()["tokens_in_window"] == 80


async def test_headers_book_what_someone_else_spent() -> None:
    limits = RateLimits(requests=10, tokens=1000, window_seconds=30.0, margin_seconds=0.0)
    pacer = KeyPacer(limits, "k")
    await pacer.acquire(100, max_wait=1)
    pacer.observe(
        {
            "x-ratelimit-limit-requests": "10",
            "x-ratelimit-remaining-requests": "2",  # we spent 1: someone else spent 7
            "x-ratelimit-reset-requests": "20s",
            "x-ratelimit-limit-tokens": "1000",
            "x-ratelimit-remaining-tokens": "500",  # we spent 100: 400 more elsewhere
            "x-ratelimit-reset-tokens": "20s",
        }
    )
    snap = pacer.snapshot()
    assert snap["requests_in_window"] == 8
    assert snap["tokens_in_window"] == 500
    await pacer.acquire(1, max_wait=1)
    await pacer.acquire(1, max_wait=1)
    with pytest.raises(PacingRefused) as info:
        await pacer.acquire(1, max_wait=1)
    assert 19 <= info.value.retry_after <= 20.5


async def test_headers_adopt_the_services_limits() -> None:
    pacer = KeyPacer(RateLimits(requests=100, window_seconds=30.0), "k")
    pacer.observe({"x-ratelimit-limit-requests": "2", "x-ratelimit-limit-tokens": "5000"})
    assert pacer.token_budget == 5000
    await pacer.acquire(1, max_wait=1)
    await pacer.acquire(1, max_wait=1)
    with pytest.raises(PacingRefused):
        await pacer.acquire(1, max_wait=1)


class _Answer:
    def __init__(self, status: int, headers: dict[str, str], tokens: int | None = None) -> None:
        self.status_code = status
        self.headers = headers
        self.body: dict[str, Any] = {"usage": {"prompt_tokens": tokens}} if tokens else {}


async def test_upstream_429_holds_the_key_and_sends_again() -> None:
    pacer = KeyPacer(RateLimits(requests=100, window_seconds=10.0), "k")
    answers = [_Answer(429, {"retry-after-ms": "200"}), _Answer(200, {}, tokens=7)]
    sent: list[float] = []

    async def send() -> _Answer:
        sent.append(time.monotonic())
        return answers[len(sent) - 1]

    answer, reported = await paced_send(pacer, 50, time.monotonic() + 10, send)
    assert answer.status_code == 200 and reported == 7
    assert len(sent) == 2 and sent[1] - sent[0] >= 0.19
    assert pacer.stats.upstream_429 == 1
    # The service refused what the ledger let through: the margin grew (0.2 s to 0.4 s).
    assert pacer.snapshot()["margin_seconds"] == 0.4


async def test_upstream_429_past_the_deadline_is_the_answer() -> None:
    pacer = KeyPacer(RateLimits(requests=100, window_seconds=10.0), "k")
    calls = 0

    async def send() -> _Answer:
        nonlocal calls
        calls += 1
        return _Answer(429, {"Retry-After": "30"})

    answer, reported = await paced_send(pacer, 5, time.monotonic() + 5, send)
    assert answer.status_code == 429 and reported is None and calls == 1
    with pytest.raises(PacingRefused):  # held: the next one is refused at once
        await pacer.acquire(1, max_wait=5)


def test_pacer_per_key_and_forgets_idle_keys() -> None:
    pacer = Pacer(RateLimits(requests=5), max_keys=2)
    a, b = pacer.for_key("a"), pacer.for_key("b")
    assert a is not b and pacer.for_key("a") is a
    pacer.for_key("c")
    assert [s["key"] for s in pacer.status()] == ["a", "c"]


def test_parsing() -> None:
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("1h2m3.5s") == 3723.5
    assert parse_duration("120ms") == pytest.approx(0.12)
    assert parse_duration("2.5") == 2.5
    assert parse_duration("soon") is None
    assert parse_rate_headers(
        {"X-RateLimit-Remaining-Requests": "3", "x-ratelimit-limit-tokens": "x"}
    ) == {"remaining_requests": 3.0}
    assert client_patience({"x-stainless-timeout": "60"}, 600) == 54.0
    assert client_patience({}, 600) == 540.0
    assert client_patience({"x-stainless-timeout": "nan"}, 100) == 90.0


def test_fit_ranges_to_budget() -> None:
    estimates = [40, 40, 40, 150, 10, 10]
    assert fit_ranges_to_budget([(0, 6)], estimates, 100) == [(0, 2), (2, 3), (3, 4), (4, 6)]
    assert fit_ranges_to_budget([(0, 3), (3, 6)], estimates, None) == [(0, 3), (3, 6)]


def test_limits_validated() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RateLimits(requests=0)
    with pytest.raises(ValueError, match="positive"):
        RateLimits(tokens=5, window_seconds=0)
    assert RateLimits.standard_tier().ledger_seconds == 61.0
    assert not RateLimits().enabled
