"""What a 429 teaches a client: wait as long as the server said, then send one request at a time.

Without it, the requests a client has in flight all meet the limit together, all wait the same
`Retry-After`, and all come back together into a window that has room for one of them: the same
requests are refused again until their retries run out. After a 429 the whole client (every
thread and task of it, not only the refused request) holds back until the server's time, then
sends one request at a time for `serial_seconds` (a rate-limit window: Privatemode counts per
minute). A request refused while requests go one at a time keeps the turn through its wait and
its retry: an honest `Retry-After` names the moment the window has room again, so the retry
meets it, instead of another request taking that room and being refused in turn. So a request
is refused at most twice (once among the concurrent ones, once in turn), which the default two
retries cover. A client that never sees a 429 never waits here.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

SERIAL_SECONDS = 60.0


class Throttle:
    """The client-wide gate every request passes before it is sent."""

    def __init__(self, serial_seconds: float = SERIAL_SECONDS) -> None:
        self.serial_seconds = serial_seconds
        self._lock = threading.Lock()
        self._serial = threading.Lock()
        self._resume_at = 0.0
        self._serial_until = 0.0

    def refused(self, retry_in: float) -> None:
        """A request was refused with 429; the server (or the backoff) said to wait `retry_in`."""
        now = time.monotonic()
        with self._lock:
            self._resume_at = max(self._resume_at, now + retry_in)
            self._serial_until = max(self._serial_until, now + retry_in + self.serial_seconds)

    @property
    def serial(self) -> bool:
        """Whether requests go one at a time now (a 429 was seen recently)."""
        return time.monotonic() < self._serial_until

    def _wait(self) -> float:
        return self._resume_at - time.monotonic()

    def keep_turn(self, sleep: Callable[[float], None]) -> None:
        """Take the one-at-a-time turn for a refused sync request's wait and retry.

        The caller passes `holding=True` to `turn` until it calls `release_turn`.
        """
        while not self._serial.acquire(timeout=0.05):
            sleep(0)  # lets the caller notice an abort between tries

    def release_turn(self) -> None:
        self._serial.release()

    @contextlib.contextmanager
    def turn(self, sleep: Callable[[float], None], *, holding: bool = False) -> Iterator[None]:
        """Hold a sync request until it may go. `sleep` waits (and may raise to give up);
        `holding`: the caller already holds the turn (`keep_turn`)."""
        held = False
        while True:
            wait = self._wait()
            if wait > 0:
                sleep(wait)
                continue
            if holding or not self.serial:
                break
            if not self._serial.acquire(timeout=0.05):
                sleep(0)  # lets the caller notice an abort between tries
                continue
            if self._wait() > 0:  # another request was refused while this one queued
                self._serial.release()
                continue
            held = True
            break
        try:
            yield
        finally:
            if held:
                self._serial.release()

    @contextlib.asynccontextmanager
    async def aturn(self, serial: asyncio.Lock, *, holding: bool = False) -> AsyncIterator[None]:
        """Hold an async request until it may go; `serial`: its loop's one-at-a-time lock, which
        the caller may already hold (`holding`) for a refused request's retry."""
        held = False
        while True:
            wait = self._wait()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if holding or not self.serial:
                break
            await serial.acquire()
            if self._wait() > 0:
                serial.release()
                continue
            held = True
            break
        try:
            yield
        finally:
            if held:
                serial.release()
