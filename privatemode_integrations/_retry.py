"""The one retry policy: which failures are retried, and how long to wait before the next try."""

from __future__ import annotations

import random
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx

RETRYABLE_STATUSES = frozenset({408, 409, 429})


def is_retryable_status(status_code: int) -> bool:
    """408, 409, 429 and every 5xx are worth another try; other 4xx never are."""
    return status_code in RETRYABLE_STATUSES or status_code >= 500


def tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a failed connection, if that is why it failed."""
    seen: BaseException | None = exc
    for _ in range(8):  # httpx wraps httpcore's error, which wraps ssl's
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def is_retryable_exception(exc: BaseException) -> bool:
    """Connection failures and timeouts are retried; a bad URL, scheme or TLS setup is not."""
    return (
        isinstance(exc, httpx.TransportError)
        and not isinstance(exc, httpx.UnsupportedProtocol)
        and tls_failure(exc) is None
    )


def parse_retry_after(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, from `retry-after-ms` or `Retry-After`.

    `Retry-After` may be delta-seconds or an HTTP date. Unparseable or negative values are
    ignored (None), so the regular backoff applies.
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        seconds = max(seconds, 0.0)
    return seconds if seconds >= 0 else None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter that honours the server's `Retry-After`.

    `max_retries` is exactly the number of retries: a request is sent at most
    `1 + max_retries` times, and nothing else in the stack retries on top of that.
    """

    max_retries: int = 2
    initial_delay: float = 0.5
    """Seconds before the first retry when the server gave no `Retry-After`."""
    max_delay: float = 8.0
    """Cap of the exponential backoff."""
    jitter: float = 0.25
    """Each backoff is shortened by a random fraction up to this, so clients spread out."""
    max_retry_after: float = 60.0
    """A longer `Retry-After` is cut to this many seconds (Privatemode limits per minute)."""

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ValueError("retry delays must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")

    def delay(self, retry_number: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry_number` (1 for the first retry)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        backoff = min(self.max_delay, self.initial_delay * 2.0 ** (retry_number - 1))
        return backoff * (1 - self.jitter * random.random())
