"""The proxy hands freed heap pages back after a burst of large answers (glibc `malloc_trim`)."""

from __future__ import annotations

import asyncio

import pytest
from privatemode_proxy._memory import LARGE_ANSWER_BYTES, MemoryTrimmer

pytestmark = pytest.mark.skipif(
    not MemoryTrimmer().available, reason="no glibc malloc_trim on this platform"
)


async def _settle(trimmer: MemoryTrimmer, trims: int) -> None:
    for _ in range(200):
        if trimmer.trims >= trims:
            return
        await asyncio.sleep(0.01)


async def test_trims_once_after_a_burst_of_large_answers() -> None:
    trimmer = MemoryTrimmer(quiet_seconds=0.05)
    for _ in range(5):
        trimmer.answered(LARGE_ANSWER_BYTES)
    await _settle(trimmer, 1)
    await asyncio.sleep(0.2)
    assert trimmer.trims == 1


async def test_small_answers_never_trim() -> None:
    trimmer = MemoryTrimmer(quiet_seconds=0.01)
    for _ in range(5):
        trimmer.answered(LARGE_ANSWER_BYTES - 1)
    await asyncio.sleep(0.1)
    assert trimmer.trims == 0


async def test_closing_cancels_a_pending_trim() -> None:
    trimmer = MemoryTrimmer(quiet_seconds=0.05)
    trimmer.answered(10 * LARGE_ANSWER_BYTES)
    trimmer.close()
    await asyncio.sleep(0.2)
    assert trimmer.trims == 0

