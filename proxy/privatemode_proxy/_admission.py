"""Admission control and bounded body reading, shared by the proxy and the local backend.

A request is admitted before its body is read: at most `max_active` requests are read, worked
on and answered at once, at most `max_queued` wait (each at most `max_wait_seconds`), and the rest
are refused at once with 503 and a `Retry-After` estimated from recent service times. A body is
counted while it is read (chunked bodies included), refused past `max_body_bytes`, and must
arrive within `body_timeout_seconds`; a body past `large_body_bytes` needs one of
`max_large_bodies` slots, so memory stays bounded by about
`max_active * large_body_bytes + max_large_bodies * max_body_bytes`.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import ClientDisconnect, Request

T = TypeVar("T")


@dataclass(frozen=True)
class AdmissionLimits:
    """How many requests are worked on and wait, and how large and slow a body may be."""

    max_active: int = 32
    """Requests read, worked on and answered at once (the upstream pool has 64 connections and
    one request may send up to 4 sub-requests at once)."""
    max_queued: int = 1024
    """Requests waiting for a slot; more are refused at once with 503 and Retry-After."""
    max_wait_seconds: float = 60.0
    """Longest wait for a slot before a 503 with Retry-After."""
    max_body_bytes: int = 64 * 1024 * 1024
    large_body_bytes: int = 8 * 1024 * 1024
    """A body past this size needs one of the `max_large_bodies` slots."""
    max_large_bodies: int = 2
    body_timeout_seconds: float = 60.0
    """A body must be received within this time of its admission (slow senders are cut off)."""

    def __post_init__(self) -> None:
        for name in ("max_active", "max_large_bodies", "max_body_bytes", "large_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_queued < 0:
            raise ValueError("max_queued must be >= 0")
        if self.max_wait_seconds <= 0 or self.body_timeout_seconds <= 0:
            raise ValueError("timeouts must be positive")


class Refused(Exception):
    """A request refused before it was worked on; `status` and `headers` say how."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        *,
        error_type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.error_type = error_type
        self.headers = dict(headers or {})


class Admission:
    """The slots of one server (create it inside or outside the event loop; it binds lazily)."""

    def __init__(self, limits: AdmissionLimits, *, what: str = "the proxy") -> None:
        self.limits = limits
        self._what = what
        self._active = asyncio.Semaphore(limits.max_active)
        self._large = asyncio.Semaphore(limits.max_large_bodies)
        self._waiting = 0
        self._in_progress = 0
        self._mean_seconds = 1.0  # moving average of a request's time in its slot
        self.refused = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def in_progress(self) -> int:
        return self._in_progress

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead, served `max_active` at a time."""
        ahead = self._waiting + 1
        estimate = ahead * self._mean_seconds / self.limits.max_active
        return max(1, min(300, math.ceil(estimate)))

    def _overloaded(self, why: str) -> Refused:
        self.refused += 1
        seconds = self.retry_after()
        return Refused(
            503,
            f"{self._what} is at capacity ({why}); retry after {seconds} s",
            "overloaded",
            error_type="service_unavailable",
            headers={"Retry-After": str(seconds)},
        )

    async def _acquire(self, semaphore: asyncio.Semaphore, why: str) -> None:
        if not semaphore.locked() and not self._waiting:
            await semaphore.acquire()
            return
        if self._waiting >= self.limits.max_queued:
            raise self._overloaded(f"{self.limits.max_active} requests in progress, {why}")
        self._waiting += 1
        try:
            async with asyncio.timeout(self.limits.max_wait_seconds):
                await semaphore.acquire()
        except TimeoutError:
            raise self._overloaded(
                f"no slot free within {self.limits.max_wait_seconds:g} s, {why}"
            ) from None
        finally:
            self._waiting -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """Admit one request (waiting in the queue if need be); raises `Refused` (503)."""
        await self._acquire(
            self._active, f"{self._waiting} waiting, at most {self.limits.max_queued}"
        )
        self._in_progress += 1
        started = time.monotonic()
        async with AsyncExitStack() as stack:
            try:
                yield Slot(self, stack)
            finally:
                self._in_progress -= 1
                self._active.release()
                elapsed = time.monotonic() - started
                self._mean_seconds = 0.9 * self._mean_seconds + 0.1 * elapsed

    async def read_body(self, request: Request, slot: Slot) -> bytes:
        """The request body, counted while read; `Refused` for too large (413) or too slow (408)."""
        limits = self.limits
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise Refused(400, "invalid Content-Length header", "invalid_request")
            if int(declared) > limits.max_body_bytes:
                raise _too_large(int(declared), limits.max_body_bytes)
            if int(declared) > limits.large_body_bytes:
                await slot.large_body()
        chunks: list[bytes] = []
        received = 0
        try:
            async with asyncio.timeout(limits.body_timeout_seconds):
                async for chunk in request.stream():
                    received += len(chunk)
                    if received > limits.max_body_bytes:
                        raise _too_large(None, limits.max_body_bytes)
                    if received > limits.large_body_bytes:
                        await slot.large_body()
                    chunks.append(chunk)
        except TimeoutError:
            raise Refused(
                408,
                f"the request body did not arrive within {limits.body_timeout_seconds:g} s",
                "request_timeout",
            ) from None
        except ClientDisconnect:
            raise Refused(499, "the client closed the connection", "client_closed") from None
        return b"".join(chunks)


class Slot:
    """An admitted request; holds a large-body slot too once its body grows past the threshold."""

    def __init__(self, admission: Admission, stack: AsyncExitStack) -> None:
        self._admission = admission
        self._stack = stack
        self._large = False

    async def large_body(self) -> None:
        if self._large:
            return
        admission = self._admission
        await admission._acquire(
            admission._large,
            f"{admission.limits.max_large_bodies} bodies over "
            f"{admission.limits.large_body_bytes} bytes in progress",
        )
        self._large = True
        self._stack.callback(admission._large.release)
        # Exceptions raised while serving a request (a refusal) sit in reference cycles with
        # the frames that hold its body and parsed data; Python frees those only at its next
        # full collection, which may be many requests later: 16 refused 60 MiB bodies kept
        # 3 GB. One collection after each large body (rare, and costly anyway) frees them.
        self._stack.callback(gc.collect)


def _too_large(size: int | None, limit: int) -> Refused:
    given = f" is {size} bytes," if size is not None else " is"
    return Refused(
        413,
        f"the request body{given} over the limit of {limit} bytes; send fewer or shorter "
        "inputs per request",
        "request_too_large",
    )


async def until_disconnected(receive: Callable[[], Awaitable[Any]]) -> None:
    """Returns when the client has gone (call only after the body has been read)."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return


async def unless_disconnected(receive: Callable[[], Awaitable[Any]], work: Awaitable[T]) -> T:
    """The result of `work`, or `Refused` (499) after cancelling it when the client goes away
    first (call only after the body has been read: the watch reads the next ASGI message)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(until_disconnected(receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise Refused(499, "the client closed the connection", "client_closed")
    return task.result()
