"""An optional per-API-key rate limit for the local backend: the real limiter a proxy must meet.

Privatemode limits each API key to a number of requests and of prompt tokens per minute (the
standard tier: 20 and 100,000). The local backend can play that part, with the window in seconds
so that tests run fast. It is a sliding log: a request is admitted only if, counting it, the last
`window_seconds` hold at most `requests` requests and `tokens` tokens. Refusals are 429 with
`Retry-After` (whole seconds), `retry-after-ms` and OpenAI's `x-ratelimit-*` headers; admitted
answers carry the `x-ratelimit-*` headers too.

The key is never stored: the log is keyed by a hash of the bearer token.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..openai import ApiError

RATE_LIMIT_ERROR = "rate_limit_error"  # nosec - an error type, not a secret


@dataclass(frozen=True)
class RateLimit:
    """At most `requests` requests and `tokens` prompt tokens per key in any `window_seconds`."""

    requests: int | None = None
    tokens: int | None = None
    window_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.requests is not None and self.requests < 1:
            raise ValueError(f"requests must be at least 1, got {self.requests}")
        if self.tokens is not None and self.tokens < 1:
            raise ValueError(f"tokens must be at least 1, got {self.tokens}")
        if not self.window_seconds > 0:
            raise ValueError(f"window_seconds must be positive, got {self.window_seconds}")


class RateLimitExceeded(ApiError):
    """A 429 with the headers that say when to come back."""

    def __init__(self, message: str, headers: dict[str, str], *, code: str) -> None:
        super().__init__(429, message, type=RATE_LIMIT_ERROR, code=code)
        self.headers = headers


@dataclass
class RateLimitStats:
    admitted: int = 0
    refused: int = 0


class _KeyLog:
    def __init__(self) -> None:
        self.entries: list[tuple[float, int]] = []  # (arrived at, tokens), in time order


class RateLimiter:
    """The sliding-log limiter, thread-safe, one log per key."""

    def __init__(self, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._logs: dict[bytes, _KeyLog] = {}
        self.stats = RateLimitStats()

    def __repr__(self) -> str:
        return f"RateLimiter({self.limit!r}, keys={len(self._logs)})"

    @staticmethod
    def _key_id(api_key: str | None) -> bytes:
        return hashlib.sha256((api_key or "").encode("utf-8")).digest()

    def admit(
        self, api_key: str | None, tokens: int, *, arrived: float | None = None
    ) -> dict[str, str]:
        """Record one request of `tokens` tokens that arrived at `arrived` (the limiter's clock;
        default: now), or raise `RateLimitExceeded` (a 429).

        Requests count from when they arrived, as a gateway in front of the service counts them,
        not from when this backend got round to them. Returns the `x-ratelimit-*` headers.
        """
        limit = self.limit
        with self._lock:
            now = self._clock()
            at = min(arrived, now) if arrived is not None else now
            log = self._logs.setdefault(self._key_id(api_key), _KeyLog())
            # Keep what a window reaching back from a late-admitted arrival still needs.
            keep_from = bisect.bisect_right(log.entries, (now - 2 * limit.window_seconds, 1 << 62))
            del log.entries[:keep_from]
            start = bisect.bisect_right(log.entries, (at - limit.window_seconds, 1 << 62))
            window = log.entries[start:]
            if limit.tokens is not None and tokens > limit.tokens:
                self.stats.refused += 1
                raise RateLimitExceeded(
                    f"request too large: {tokens} tokens, over the limit of {limit.tokens} "
                    f"tokens per {limit.window_seconds:g} s; send fewer inputs per request",
                    self._headers(window, now, None),
                    code="rate_limit_request_too_large",
                )
            wait = self._wait(window, now, tokens)
            if wait > 0:
                self.stats.refused += 1
                which = self._which(window)
                raise RateLimitExceeded(
                    f"rate limit reached: at most {which} per {limit.window_seconds:g} s for "
                    f"this API key; retry after {wait:.3f} s",
                    self._headers(window, now, wait),
                    code="rate_limit_exceeded",
                )
            bisect.insort(log.entries, (at, tokens))
            self.stats.admitted += 1
            return self._headers([*window, (at, tokens)], now, None)

    def _which(self, window: list[tuple[float, int]]) -> str:
        limit = self.limit
        if limit.requests is not None and len(window) + 1 > limit.requests:
            return f"{limit.requests} requests"
        return f"{limit.tokens} tokens"

    def _wait(self, window: list[tuple[float, int]], now: float, tokens: int) -> float:
        """Seconds until this request would fit (0 if it fits now)."""
        limit = self.limit
        need_requests = 0
        if limit.requests is not None:
            need_requests = max(0, len(window) + 1 - limit.requests)
        need_tokens = 0
        if limit.tokens is not None:
            need_tokens = max(0, sum(t for _, t in window) + tokens - limit.tokens)
        if need_requests == 0 and need_tokens == 0:
            return 0.0
        freed_requests = freed_tokens = 0
        for at, count in window:
            freed_requests += 1
            freed_tokens += count
            if freed_requests >= need_requests and freed_tokens >= need_tokens:
                return max(at + limit.window_seconds - now, 0.001)
        return limit.window_seconds  # unreachable while a single request fits the budget

    def _headers(
        self, window: list[tuple[float, int]], now: float, wait: float | None
    ) -> dict[str, str]:
        limit = self.limit
        headers: dict[str, str] = {}
        # OpenAI's meaning: the time until the budget is whole again (the newest entry expires).
        newest = max((at for at, _ in window), default=None)
        full_reset = max(newest + limit.window_seconds - now, 0.0) if newest is not None else 0.0
        if limit.requests is not None:
            headers["x-ratelimit-limit-requests"] = str(limit.requests)
            headers["x-ratelimit-remaining-requests"] = str(max(limit.requests - len(window), 0))
            headers["x-ratelimit-reset-requests"] = f"{full_reset:.3f}s"
        if limit.tokens is not None:
            headers["x-ratelimit-limit-tokens"] = str(limit.tokens)
            used = sum(t for _, t in window)
            headers["x-ratelimit-remaining-tokens"] = str(max(limit.tokens - used, 0))
            headers["x-ratelimit-reset-tokens"] = f"{full_reset:.3f}s"
        if wait is not None:
            headers["Retry-After"] = str(max(1, math.ceil(wait)))
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
        return headers
