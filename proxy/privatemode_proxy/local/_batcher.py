"""Run the embedding engine off the event loop, one bounded batch at a time.

Why a batcher and not a thread per request: the engine is CPU-bound (numpy already uses both
cores), so running several requests at once only adds memory. One worker thread takes bounded
batches from a queue instead, which keeps memory flat however many requests wait, and:
- coalesces concurrent small requests into one engine call (fewer, fuller batches);
- splits a large request into length-sorted chunks (little padding) and serves waiting requests
  round-robin, so a 2,048-input request does not hold up a one-line request behind it;
- keeps a failing engine call from failing other requests that were coalesced with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ._engine import EmbeddingEngine

logger = logging.getLogger("privatemode_proxy.local")


class BackendStopping(RuntimeError):
    """The batcher or the process is shutting down; the request was not embedded.

    Not an engine failure: at Ctrl-C the interpreter refuses new work for the engine's thread
    pool before the server stops, and each batch still queued ends here, quietly.
    """

DEFAULT_MAX_BATCH_TOKENS = 8192
"""Padded tokens (inputs x longest input) per engine call: bounds latency and memory."""
DEFAULT_MAX_BATCH_TEXTS = 256

Vectors = npt.NDArray[np.float32]


@dataclass
class BatcherStats:
    """What the worker did; read by tests and benchmarks (event-loop writes, plain ints)."""

    batches: int = 0
    texts: int = 0
    coalesced_batches: int = 0
    """Batches that carried inputs of more than one request."""
    most_requests_in_a_batch: int = 0
    engine_failures: int = 0


@dataclass(eq=False)
class _Piece:
    """A chunk of one request's inputs, embedded in one engine call."""

    positions: list[int]
    texts: list[str]
    cost: int
    future: asyncio.Future[Vectors]
    job: int
    """Which `embed` call the piece belongs to."""


@dataclass(eq=False)
class _Job:
    """One `embed` call: its pieces not yet taken by the worker."""

    pieces: deque[_Piece] = field(default_factory=deque)
    cancelled: bool = False


def plan_pieces(
    token_counts: Sequence[int], *, max_batch_tokens: int, max_batch_texts: int
) -> list[list[int]]:
    """Split input positions into chunks, sorted by length, each within the budgets.

    The cost of a chunk is its padded size (inputs x longest input), what the engine computes.
    A single input is always a chunk of its own if it alone exceeds the budget.
    """
    order = sorted(range(len(token_counts)), key=lambda i: token_counts[i])
    chunks: list[list[int]] = []
    current: list[int] = []
    for position in order:
        longest = max(token_counts[position], 1)  # sorted: the newest is the longest
        if current and (
            (len(current) + 1) * longest > max_batch_tokens or len(current) >= max_batch_texts
        ):
            chunks.append(current)
            current = []
        current.append(position)
    if current:
        chunks.append(current)
    return chunks


class EmbeddingBatcher:
    """Queue of embedding work served by one engine thread. Use from one event loop."""

    def __init__(
        self,
        engine: EmbeddingEngine,
        *,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        max_batch_texts: int = DEFAULT_MAX_BATCH_TEXTS,
    ) -> None:
        if max_batch_tokens < 1 or max_batch_texts < 1:
            raise ValueError("batch budgets must be positive")
        self._engine = engine
        self._max_tokens = max_batch_tokens
        self._max_texts = max_batch_texts
        self._jobs: deque[_Job] = deque()
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self.stats = BatcherStats()

    @property
    def engine(self) -> EmbeddingEngine:
        return self._engine

    async def start(self) -> None:
        if self._worker is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedding-engine")
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="embedding-batcher")

    async def aclose(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while self._jobs:
            job = self._jobs.popleft()
            for piece in job.pieces:
                if not piece.future.done():
                    piece.future.set_exception(BackendStopping("the embedding backend is stopping"))
        if self._executor is not None:
            # An engine call in progress cannot be interrupted; don't block the loop on it.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def embed(self, texts: Sequence[str], token_counts: Sequence[int]) -> Vectors:
        """Embeddings of `texts`, in order. `token_counts` (same length) drive the chunking."""
        if len(texts) != len(token_counts):
            raise ValueError("texts and token_counts differ in length")
        if self._worker is None or self._closed:
            raise RuntimeError("the embedding batcher is not running")
        if not texts:
            return np.empty((0, self._engine.dimensions), dtype=np.float32)
        loop = asyncio.get_running_loop()
        job = _Job()
        job_key = id(job)
        for positions in plan_pieces(
            token_counts, max_batch_tokens=self._max_tokens, max_batch_texts=self._max_texts
        ):
            longest = max(max(token_counts[p] for p in positions), 1)
            job.pieces.append(
                _Piece(
                    positions=positions,
                    texts=[texts[p] for p in positions],
                    cost=len(positions) * longest,
                    future=loop.create_future(),
                    job=job_key,
                )
            )
        futures = [piece.future for piece in job.pieces]
        pieces = list(job.pieces)
        self._jobs.append(job)
        self._wakeup.set()
        try:
            results = await asyncio.gather(*futures)
        except BaseException:
            job.cancelled = True
            for fut in futures:
                fut.cancel()
            raise
        out = np.empty((len(texts), self._engine.dimensions), dtype=np.float32)
        for piece, vectors in zip(pieces, results, strict=True):
            out[piece.positions] = vectors
        return out

    def _take_batch(self) -> list[_Piece]:
        """Pieces for the next engine call: round-robin over waiting jobs, within the budget."""
        batch: list[_Piece] = []
        cost = 0
        texts = 0
        while self._jobs:
            job = self._jobs[0]
            if job.cancelled or not job.pieces:
                self._jobs.popleft()
                continue
            piece = job.pieces[0]
            if batch and (
                cost + piece.cost > self._max_tokens or texts + len(piece.texts) > self._max_texts
            ):
                break
            job.pieces.popleft()
            self._jobs.popleft()
            if job.pieces:
                self._jobs.append(job)  # its next piece waits for the other jobs' turn
            batch.append(piece)
            cost += piece.cost
            texts += len(piece.texts)
            if len(self._jobs) == 1 and self._jobs[0] is job:
                break  # only this job left: take its next piece in the next call
        return batch

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._jobs:
                batch = self._take_batch()
                if not batch:
                    continue
                try:
                    await self._run_batch(batch)
                except Exception as exc:  # a bug here must not leave requests waiting forever
                    logger.error("embedding batch failed: %s", type(exc).__name__)
                    for piece in batch:
                        _fail(piece, exc)

    async def _call_engine(self, texts: list[str]) -> Vectors:
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        try:
            pending = loop.run_in_executor(self._executor, self._engine.embed, texts)
        except RuntimeError as exc:  # "cannot schedule new futures after (interpreter) shutdown"
            raise BackendStopping("the embedding backend is stopping") from exc
        try:
            vectors = await pending
        except RuntimeError as exc:
            # The same refusal from inside the engine's own worker pool (Ctrl-C ends the
            # interpreter while a batch runs), or any failure once we are closing: a stop,
            # not an engine fault worth an error line.
            if self._closed or "shutdown" in str(exc):
                raise BackendStopping("the embedding backend is stopping") from exc
            raise
        result = np.asarray(vectors, dtype=np.float32)
        if result.shape != (len(texts), self._engine.dimensions):
            raise RuntimeError(f"the engine returned shape {result.shape} for {len(texts)} inputs")
        return result

    async def _run_batch(self, batch: list[_Piece]) -> None:
        live = [p for p in batch if not p.future.done()]
        if not live:
            return
        texts = [t for p in live for t in p.texts]
        self.stats.batches += 1
        self.stats.texts += len(texts)
        requests = len({p.job for p in live})
        if requests > 1:
            self.stats.coalesced_batches += 1
        self.stats.most_requests_in_a_batch = max(self.stats.most_requests_in_a_batch, requests)
        try:
            vectors = await self._call_engine(texts)
        except BackendStopping as exc:
            logger.debug("embedding batch dropped: the backend is stopping")
            for piece in live:
                _fail(piece, exc)
            return
        except Exception as exc:
            self.stats.engine_failures += 1
            # The type only: an engine's message could quote the input.
            logger.error("embedding engine failed on a batch: %s", type(exc).__name__)
            if len(live) == 1:
                _fail(live[0], exc)
                return
            # Don't let one request's inputs fail the others coalesced with it.
            for piece in live:
                try:
                    _resolve(piece, await self._call_engine(piece.texts))
                except Exception as piece_exc:
                    self.stats.engine_failures += 1
                    _fail(piece, piece_exc)
            return
        start = 0
        for piece in live:
            end = start + len(piece.texts)
            _resolve(piece, vectors[start:end])
            start = end


def _resolve(piece: _Piece, vectors: Vectors) -> None:
    if not piece.future.done():
        piece.future.set_result(vectors)


def _fail(piece: _Piece, exc: Exception) -> None:
    if not piece.future.done():
        piece.future.set_exception(exc)
