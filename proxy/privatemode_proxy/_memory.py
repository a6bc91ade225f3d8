"""Giving memory back to the system once a burst of large answers is over.

A 2,048 x 384 answer passes through the proxy as ~25 MB of short-lived buffers (the encrypted
body, its plaintext, the parsed rows, the client's body). Python frees them, but glibc's
allocator keeps the freed heap pages for reuse, so a proxy that served a few large answers kept
260-620 MB of RSS instead of its ~80 MB idle size. `malloc_trim(0)` hands the free pages back.
It runs in a worker thread (ctypes releases the GIL; the event loop keeps serving) a moment after
the last large answer, so a steady stream of requests never pays for it. Elsewhere (musl, macOS,
Windows) there is no `malloc_trim` and this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import sys
from collections.abc import Callable

logger = logging.getLogger(__name__)

LARGE_ANSWER_BYTES = 1 << 20
"""An answer (to the client or from upstream) at least this big schedules a trim."""
QUIET_SECONDS = 1.0
"""The trim runs this long after the last large answer."""


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class MemoryTrimmer:
    """Call `answered(nbytes)` for each answer; trims once large answers stop coming."""

    def __init__(self, quiet_seconds: float = QUIET_SECONDS) -> None:
        self._trim = _malloc_trim()
        self._quiet = quiet_seconds
        self._timer: asyncio.TimerHandle | None = None
        self._running: asyncio.Task[None] | None = None
        self.trims = 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def answered(self, nbytes: int) -> None:
        """Note an answer of `nbytes`; must be called on the event loop."""
        if self._trim is None or nbytes < LARGE_ANSWER_BYTES:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self._quiet, self._start)

    def _start(self) -> None:
        self._timer = None
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        trim = self._trim
        if trim is None:  # pragma: no cover - never scheduled without it
            return
        await asyncio.to_thread(trim, 0)
        self.trims += 1

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
