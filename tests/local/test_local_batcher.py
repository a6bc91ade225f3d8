"""The engine batcher: length-sorted chunks, coalescing, round-robin fairness, failure isolation.

The engine is the real one. `RecordingEngine` only records what it is asked and delegates;
`FaultInjectingEngine` delegates too but raises on a marker text, because the real engine never
fails on valid input and the isolation of a failure must still be tested.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
from privatemode_proxy.local._batcher import EmbeddingBatcher, plan_pieces
from privatemode_proxy.local._engine import EmbeddingEngine


class RecordingEngine:
    """The real engine, recording the inputs of every `embed` call."""

    def __init__(self, engine: EmbeddingEngine) -> None:
        self._engine = engine
        self.model_id = engine.model_id
        self.dimensions = engine.dimensions
        self.max_tokens_per_input = engine.max_tokens_per_input
        self.calls: list[list[str]] = []

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self._engine.count_tokens(texts)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls.append(list(texts))
        return self._engine.embed(texts)


class FaultInjectingEngine(RecordingEngine):
    """The real engine, except that a batch containing `MARKER` raises."""

    MARKER = "<<fail here>>"

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls.append(list(texts))
        if self.MARKER in texts:
            raise RuntimeError("injected engine failure")
        return self._engine.embed(texts)


TEXTS = [
    "short",
    "a somewhat longer sentence about confidential computing and embeddings",
    "",
    "mid length text here",
    "Grüße aus Köln 🙂",
    "word " * 60,
]


def direct(engine: EmbeddingEngine, texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """Each text embedded alone: the reference the batcher's output must match."""
    return np.vstack([engine.embed([t]) for t in texts])


def test_plan_pieces_sorts_and_respects_budgets() -> None:
    counts = [5, 300, 2, 40, 40, 7, 1000, 3]
    chunks = plan_pieces(counts, max_batch_tokens=100, max_batch_texts=3)
    flat = [p for chunk in chunks for p in chunk]
    assert sorted(flat) == list(range(len(counts)))
    assert [counts[p] for p in flat] == sorted(counts)
    for chunk in chunks:
        assert len(chunk) <= 3
        padded = len(chunk) * max(counts[p] for p in chunk)
        assert padded <= 100 or len(chunk) == 1  # an over-budget input goes alone
    assert [6] in chunks and [1] in chunks


async def test_results_in_input_order(engine: EmbeddingEngine) -> None:
    batcher = EmbeddingBatcher(engine, max_batch_tokens=64, max_batch_texts=2)
    await batcher.start()
    try:
        counts = engine.count_tokens(TEXTS)
        vectors = await batcher.embed(TEXTS, counts)
    finally:
        await batcher.aclose()
    np.testing.assert_allclose(vectors, direct(engine, TEXTS), atol=2e-6)
    assert batcher.stats.batches >= 3  # the small budget split the request


async def test_concurrent_small_requests_coalesce(engine: EmbeddingEngine) -> None:
    recording = RecordingEngine(engine)
    batcher = EmbeddingBatcher(recording)
    await batcher.start()
    try:
        requests = [[t] for t in TEXTS[:4]]
        results = await asyncio.gather(
            *(batcher.embed(r, recording.count_tokens(r)) for r in requests)
        )
    finally:
        await batcher.aclose()
    # All four were queued before the worker ran: one engine call carried them all.
    assert len(recording.calls) == 1 and sorted(recording.calls[0]) == sorted(TEXTS[:4])
    assert batcher.stats.coalesced_batches == 1
    assert batcher.stats.most_requests_in_a_batch == 4
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_allclose(result, direct(engine, request), atol=2e-6)


async def test_large_request_does_not_hold_up_a_small_one(engine: EmbeddingEngine) -> None:
    recording = RecordingEngine(engine)
    batcher = EmbeddingBatcher(recording, max_batch_tokens=10_000, max_batch_texts=8)
    await batcher.start()
    try:
        large = [f"document number {i} of the large request" for i in range(64)]
        small = ["the small request"]
        large_task = asyncio.ensure_future(batcher.embed(large, recording.count_tokens(large)))
        await asyncio.sleep(0)  # the large request is queued first
        small_vectors = await batcher.embed(small, recording.count_tokens(small))
        await large_task
    finally:
        await batcher.aclose()
    assert len(recording.calls) >= 8  # 64 inputs, at most 8 per call
    small_call = next(i for i, call in enumerate(recording.calls) if "the small request" in call)
    # Round-robin: the small request waits for at most the large one's chunk in progress and
    # its next one, not for all eight.
    assert small_call <= 2
    np.testing.assert_allclose(small_vectors, direct(engine, small), atol=2e-6)


async def test_engine_failure_only_fails_its_own_request(engine: EmbeddingEngine) -> None:
    faulty = FaultInjectingEngine(engine)
    batcher = EmbeddingBatcher(faulty)
    await batcher.start()
    try:
        good = ["fine text", "another fine text"]
        bad = ["ok", FaultInjectingEngine.MARKER]
        results = await asyncio.gather(
            batcher.embed(good, faulty.count_tokens(good)),
            batcher.embed(bad, faulty.count_tokens(bad)),
            return_exceptions=True,
        )
        # The worker survives: later requests are served.
        later = await batcher.embed(["later"], faulty.count_tokens(["later"]))
    finally:
        await batcher.aclose()
    good_result, bad_result = results
    assert isinstance(bad_result, RuntimeError) and "injected" in str(bad_result)
    assert isinstance(good_result, np.ndarray)
    np.testing.assert_allclose(good_result, direct(engine, good), atol=2e-6)
    np.testing.assert_allclose(later, direct(engine, ["later"]), atol=2e-6)
    assert batcher.stats.engine_failures >= 2  # the coalesced call, then the bad one alone


async def test_cancelled_request_does_not_stall_others(engine: EmbeddingEngine) -> None:
    recording = RecordingEngine(engine)
    batcher = EmbeddingBatcher(recording, max_batch_tokens=10_000, max_batch_texts=4)
    await batcher.start()
    try:
        doomed_texts = [f"doomed {i}" for i in range(40)]
        doomed = asyncio.ensure_future(
            batcher.embed(doomed_texts, recording.count_tokens(doomed_texts))
        )
        await asyncio.sleep(0)
        doomed.cancel()
        survivor = await batcher.embed(["survivor"], recording.count_tokens(["survivor"]))
        with pytest.raises(asyncio.CancelledError):
            await doomed
    finally:
        await batcher.aclose()
    np.testing.assert_allclose(survivor, direct(engine, ["survivor"]), atol=2e-6)
    # The cancelled request's remaining chunks were dropped, not embedded.
    embedded = sum(len(c) for c in recording.calls)
    assert embedded < len(doomed_texts)


async def test_closed_batcher_refuses(engine: EmbeddingEngine) -> None:
    batcher = EmbeddingBatcher(engine)
    await batcher.start()
    await batcher.aclose()
    with pytest.raises(RuntimeError, match="not running"):
        await batcher.embed(["x"], [3])


class ShutdownEngine(RecordingEngine):
    """The real engine, except that its own worker pool refuses as at interpreter shutdown."""

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls.append(list(texts))
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")


async def test_engine_refusing_at_shutdown_is_a_quiet_stop(
    engine: EmbeddingEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """Ctrl-C in local mode: the engine's pool refuses mid-batch; that is no engine error."""
    from privatemode_proxy.local._batcher import BackendStopping

    stopping = ShutdownEngine(engine)
    batcher = EmbeddingBatcher(stopping)
    await batcher.start()
    try:
        with caplog.at_level("DEBUG", logger="privatemode_proxy.local._batcher"):
            with pytest.raises(BackendStopping):
                await batcher.embed(["a", "b"], stopping.count_tokens(["a", "b"]))
    finally:
        await batcher.aclose()
    assert stopping.calls  # the engine was reached
    assert batcher.stats.engine_failures == 0
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
