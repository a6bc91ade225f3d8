"""Pacing: keep each upstream API key within its rate limit instead of drawing 429s.

Privatemode limits each API key to N requests and T prompt tokens per minute (standard tier: 20
and 100,000). The proxy sees all of an app's traffic, so it can keep within that itself: every
upstream request first acquires a slot from its key's `KeyPacer`.

- A sliding log, not a token bucket: a request is let through only if, counting it, **any**
  window of `window_seconds` (plus a small margin for the trip to the server) holds at most N
  requests and T tokens. A bucket that holds a full window's budget can burst past the limit.
- Requests wait in a bounded FIFO queue per key. A request whose projected wait exceeds what its
  client will wait (`X-Stainless-Timeout`, which OpenAI's SDK sends, else a default) is refused
  at once with 429 and a `Retry-After` that says when it could be served.
- Tokens are debited by estimate when a request is let through and corrected to the service's
  `usage.prompt_tokens` when its answer arrives.
- The service's `x-ratelimit-*` headers correct the ledger (someone else using the same key, a
  different tier) and a 429's `Retry-After` holds the key until then.

The proxy splits a request so that each upstream request's estimated tokens fit one window
(`fit_ranges_to_budget`): a larger one could never be let through.

Over 600 lines on purpose: the ledger, the queue and the corrections from the service's answers
share one lock and one notion of "now", and are easier to check for races in one file.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
_A = TypeVar("_A", bound="_Answer")

STANDARD_TIER_REQUESTS = 20
STANDARD_TIER_TOKENS = 100_000
STANDARD_TIER_WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class RateLimits:
    """The budget of one upstream API key, and how long requests may queue for it."""

    requests: int | None = None
    """Requests per window; None: no request limit."""
    tokens: int | None = None
    """Prompt tokens per window; None: no token limit."""
    window_seconds: float = STANDARD_TIER_WINDOW_SECONDS
    max_queue: int = 1024
    """Requests waiting per key; past it a request is refused with 429 at once."""
    default_wait_seconds: float = 600.0
    """How long a request may wait when its client did not say (OpenAI's SDK default timeout)."""
    margin_seconds: float | None = None
    """Added to the window: requests reach the server a little after they leave the ledger.
    None: 2 % of the window, at most 1 s. It doubles (up to a tenth of the window) whenever the
    service answers 429 all the same."""

    def __post_init__(self) -> None:
        if self.requests is not None and self.requests < 1:
            raise ValueError(f"the request limit must be at least 1, got {self.requests}")
        if self.tokens is not None and self.tokens < 1:
            raise ValueError(f"the token limit must be at least 1, got {self.tokens}")
        if not self.window_seconds > 0:
            raise ValueError(f"the rate limit window must be positive, got {self.window_seconds}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {self.max_queue}")

    @property
    def enabled(self) -> bool:
        return self.requests is not None or self.tokens is not None

    @property
    def ledger_seconds(self) -> float:
        """How long a request stays on the ledger: the window plus the margin."""
        margin = (
            self.margin_seconds
            if self.margin_seconds is not None
            else min(0.02 * self.window_seconds, 1.0)
        )
        return self.window_seconds + margin

    @classmethod
    def standard_tier(cls) -> RateLimits:
        return cls(STANDARD_TIER_REQUESTS, STANDARD_TIER_TOKENS, STANDARD_TIER_WINDOW_SECONDS)


REAL_SERVICE_HOSTS = frozenset({"api.privatemode.ai"})
"""Where the standard tier's limits apply unless the flags say otherwise."""


def rate_limits_for(
    api_url: str,
    *,
    requests: int | None = None,
    tokens: int | None = None,
    window_seconds: float | None = None,
) -> RateLimits | None:
    """The pacing the CLI sets up: as the flags say (0 turns a limit off); without flags, the
    standard tier for the real service and none for the local backend or another endpoint."""
    from urllib.parse import urlsplit

    window = float(window_seconds) if window_seconds is not None else STANDARD_TIER_WINDOW_SECONDS
    if requests is None and tokens is None:
        if (urlsplit(api_url).hostname or "").lower() not in REAL_SERVICE_HOSTS:
            return None
        requests, tokens = STANDARD_TIER_REQUESTS, STANDARD_TIER_TOKENS
    limits = RateLimits(requests or None, tokens or None, window)
    return limits if limits.enabled else None


class PacingRefused(Exception):
    """The request cannot be let through within its client's patience (answered as 429)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(retry_after, 0.0)

    def headers(self) -> dict[str, str]:
        return {
            "Retry-After": str(max(1, math.ceil(self.retry_after))),
            "retry-after-ms": str(max(1, math.ceil(self.retry_after * 1000))),
        }


class _Entry:
    __slots__ = ("expires", "requests", "tokens")

    def __init__(self, expires: float, tokens: int, requests: int = 1) -> None:
        self.expires = expires
        self.tokens = tokens
        self.requests = requests

    def __lt__(self, other: _Entry) -> bool:
        return self.expires < other.expires


class Grant:
    """A request let through; `settle` replaces its estimated tokens by the reported ones."""

    def __init__(self, pacer: KeyPacer, entry: _Entry, waited: float) -> None:
        self._pacer = pacer
        self._entry = entry
        self.waited = waited
        """Seconds the request queued."""

    @property
    def tokens(self) -> int:
        return self._entry.tokens

    def settle(self, tokens: int | None) -> None:
        """The service's count (`usage.prompt_tokens`); None keeps the estimate."""
        if tokens is None or tokens < 0 or tokens == self._entry.tokens:
            return
        self._pacer._resize(self._entry, tokens)


@dataclass
class _Waiter:
    tokens: int
    future: asyncio.Future[Grant]
    queued_at: float


@dataclass
class PacingStats:
    granted: int = 0
    refused: int = 0
    waited_seconds: float = 0.0
    upstream_429: int = 0


class KeyPacer:
    """The ledger and the queue of one upstream API key. Use on one event loop."""

    def __init__(self, limits: RateLimits, label: str, *, clock: Clock = time.monotonic) -> None:
        self.limits = limits
        self.label = label
        """A name that is safe to show (never the key)."""
        self._clock = clock
        self._requests = limits.requests
        self._tokens = limits.tokens
        self._ledger: list[_Entry] = []  # sorted by expiry
        self._ledger_tokens = 0
        self._ledger_requests = 0
        self._queue: deque[_Waiter] = deque()
        self._held_until = 0.0
        self._span = limits.ledger_seconds
        """How long an entry stays on the ledger: the window plus the (adaptive) margin."""
        self._timer: asyncio.TimerHandle | None = None
        self.stats = PacingStats()

    def __repr__(self) -> str:
        return f"KeyPacer({self.label!r}, queued={len(self._queue)}, ledger={len(self._ledger)})"

    # -- budget ---------------------------------------------------------------------------------

    @property
    def token_budget(self) -> int | None:
        """Tokens one window allows: no single upstream request may carry more."""
        return self._tokens

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    @property
    def idle(self) -> bool:
        return not self._queue and not self._ledger and self._held_until <= self._clock()

    def _expire(self, now: float) -> None:
        drop = 0
        for entry in self._ledger:
            if entry.expires > now:
                break
            self._ledger_tokens -= entry.tokens
            self._ledger_requests -= entry.requests
            drop += 1
        if drop:
            del self._ledger[:drop]

    def _fit_time(
        self,
        ledger: Sequence[_Entry],
        ledger_requests: int,
        ledger_tokens: int,
        tokens: int,
        now: float,
    ) -> float:
        """The earliest time >= now at which a request of `tokens` fits beside `ledger`."""
        need_requests = 0
        if self._requests is not None:
            need_requests = max(0, ledger_requests + 1 - self._requests)
        need_tokens = 0
        if self._tokens is not None:
            need_tokens = max(0, ledger_tokens + min(tokens, self._tokens) - self._tokens)
        at = max(now, self._held_until)
        if need_requests == 0 and need_tokens == 0:
            return at
        freed_requests = freed_tokens = 0
        for entry in ledger:
            freed_requests += entry.requests
            freed_tokens += entry.tokens
            if freed_requests >= need_requests and freed_tokens >= need_tokens:
                return max(at, entry.expires)
        return max(at, ledger[-1].expires if ledger else now)

    def projected_start(self, tokens: int) -> float:
        """When a request of `tokens` joining the queue now would be let through (an upper
        bound: estimates only shrink when answers report their usage)."""
        return self.projected_start_many([tokens])

    def projected_start_many(self, token_list: Sequence[int]) -> float:
        """When the last of several requests joining the queue now would be let through."""
        now = self._clock()
        self._expire(now)
        ledger = list(self._ledger)
        ledger_tokens = self._ledger_tokens
        ledger_requests = self._ledger_requests
        span = self._span
        at = now
        cap = self._tokens
        capped = [t if cap is None else min(t, cap) for t in token_list]
        for item in [*(w.tokens for w in self._queue), *capped]:
            at = max(at, self._fit_time(ledger, ledger_requests, ledger_tokens, item, at))
            # Entries that have expired by `at` no longer count.
            while ledger and ledger[0].expires <= at:
                gone = ledger.pop(0)
                ledger_tokens -= gone.tokens
                ledger_requests -= gone.requests
            bisect.insort(ledger, _Entry(at + span, item))
            ledger_tokens += item
            ledger_requests += 1
        return at

    # -- acquiring ------------------------------------------------------------------------------

    async def acquire(self, tokens: int, *, max_wait: float) -> Grant:
        """Wait for room for one request of (an estimated) `tokens`; FIFO per key.

        Raises `PacingRefused` at once when the projected wait exceeds `max_wait` or the queue
        is full.
        """
        now = self._clock()
        if self._tokens is not None and tokens > self._tokens:
            tokens = self._tokens  # split to fit by the caller; an estimate can still be over
        start = self.projected_start(tokens)
        wait = start - now
        if wait > max_wait:
            self.stats.refused += 1
            raise PacingRefused(
                f"the rate limit of this API key ({self.describe()}) has {len(self._queue)} "
                f"request(s) waiting; this one could start in {wait:.1f} s, longer than the "
                f"client waits ({max_wait:.1f} s). Retry after that, or raise the client's "
                "timeout.",
                wait,
            )
        if len(self._queue) >= self.limits.max_queue:
            self.stats.refused += 1
            raise PacingRefused(
                f"{len(self._queue)} requests already wait for the rate limit of this API key "
                f"({self.describe()}); retry later",
                wait,
            )
        future: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(tokens, future, now)
        self._queue.append(waiter)
        self._pump()
        try:
            return await future
        except asyncio.CancelledError:
            # The client left. Still queued: make room. Already let through: the slot stays
            # spent (conservative: the ledger never under-counts).
            if waiter in self._queue:
                self._queue.remove(waiter)
                self._pump()
            raise

    def describe(self) -> str:
        parts = []
        if self._requests is not None:
            parts.append(f"{self._requests} requests")
        if self._tokens is not None:
            parts.append(f"{self._tokens} tokens")
        return f"{' and '.join(parts)} per {self.limits.window_seconds:g} s"

    def _pump(self) -> None:
        """Let through as many queued requests as fit now; wake up when the next one will."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # cancelled
                self._queue.popleft()
                continue
            now = self._clock()
            self._expire(now)
            at = self._fit_time(
                self._ledger, self._ledger_requests, self._ledger_tokens, head.tokens, now
            )
            if at > now:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(at - now, self._pump)
                return
            self._queue.popleft()
            entry = _Entry(now + self._span, head.tokens)
            bisect.insort(self._ledger, entry)
            self._ledger_tokens += head.tokens
            self._ledger_requests += 1
            waited = now - head.queued_at
            self.stats.granted += 1
            self.stats.waited_seconds += waited
            logger.debug(
                "%s: let through %d tokens after %.3f s; %d requests and %d tokens in the window",
                self.label,
                head.tokens,
                waited,
                self._ledger_requests,
                self._ledger_tokens,
            )
            head.future.set_result(Grant(self, entry, waited))

    def _resize(self, entry: _Entry, tokens: int) -> None:
        if entry in self._ledger:
            self._ledger_tokens += tokens - entry.tokens
        entry.tokens = tokens
        self._pump_soon()

    def _pump_soon(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._pump()

    # -- what the service says ----------------------------------------------------------------

    def hold(self, seconds: float) -> None:
        """The service answered 429: nothing more for this key until `seconds` from now."""
        self.stats.upstream_429 += 1
        # Our ledger said there was room: requests reach the service later than we thought.
        window = self.limits.window_seconds
        margin = self._span - window
        self._span = window + min(max(2 * margin, 0.05), 0.1 * window)
        until = self._clock() + max(seconds, 0.0)
        if until > self._held_until:
            self._held_until = until
        self._pump_soon()

    def observe(self, headers: Mapping[str, str]) -> None:
        """Align the ledger with the service's `x-ratelimit-*` headers, where it sends them."""
        info = parse_rate_headers(headers)
        if not info:
            return
        now = self._clock()
        self._expire(now)
        changed = False
        limit = info.get("limit_requests")
        if limit is not None and limit != self._requests and limit >= 1:
            logger.info("%s: the service reports %d requests per window", self.label, int(limit))
            self._requests = int(limit)
            changed = True
        limit = info.get("limit_tokens")
        if limit is not None and limit != self._tokens and limit >= 1:
            logger.info("%s: the service reports %d tokens per window", self.label, int(limit))
            self._tokens = int(limit)
            changed = True
        # Fewer remaining upstream than on our ledger: someone else spends this key's budget
        # (another proxy, another tool). Book the difference until the service's reset.
        remaining = info.get("remaining_requests")
        if remaining is not None and self._requests is not None:
            ours = self._requests - self._ledger_requests
            extra = min(int(ours - remaining), self._requests)
            if extra > 0:
                reset = info.get("reset_requests", self.limits.window_seconds)
                bisect.insort(self._ledger, _Entry(now + reset, 0, requests=extra))
                self._ledger_requests += extra
                changed = True
        remaining = info.get("remaining_tokens")
        if remaining is not None and self._tokens is not None:
            ours = self._tokens - self._ledger_tokens
            extra = int(ours - remaining)
            if extra > 0:
                reset = info.get("reset_tokens", self.limits.window_seconds)
                bisect.insort(self._ledger, _Entry(now + reset, extra, requests=0))
                self._ledger_tokens += extra
                changed = True
        if changed:
            self._pump_soon()

    def snapshot(self) -> dict[str, Any]:
        """What the status page shows: budget in use and queue length (no key material)."""
        now = self._clock()
        self._expire(now)
        return {
            "key": self.label,
            "window_seconds": self.limits.window_seconds,
            "requests_limit": self._requests,
            "requests_in_window": self._ledger_requests,
            "tokens_limit": self._tokens,
            "tokens_in_window": self._ledger_tokens,
            "queued": len(self._queue),
            "held_for_seconds": round(max(self._held_until - now, 0.0), 3),
            "margin_seconds": round(self._span - self.limits.window_seconds, 3),
            "granted": self.stats.granted,
            "refused": self.stats.refused,
            "upstream_429": self.stats.upstream_429,
        }


class Pacer:
    """One `KeyPacer` per upstream API key (by its non-secret id); idle ones are forgotten."""

    def __init__(
        self, limits: RateLimits, *, max_keys: int = 1024, clock: Clock = time.monotonic
    ) -> None:
        self.limits = limits
        self._max_keys = max_keys
        self._clock = clock
        self._keys: OrderedDict[str, KeyPacer] = OrderedDict()

    def __repr__(self) -> str:
        return f"Pacer({self.limits!r}, keys={len(self._keys)})"

    def for_key(self, key_id: str) -> KeyPacer:
        pacer = self._keys.get(key_id)
        if pacer is None:
            pacer = KeyPacer(self.limits, key_id, clock=self._clock)
            self._keys[key_id] = pacer
            if len(self._keys) > self._max_keys:
                for old_id, old in list(self._keys.items()):
                    if len(self._keys) <= self._max_keys:
                        break
                    if old.idle and old is not pacer:
                        del self._keys[old_id]
        else:
            self._keys.move_to_end(key_id)
        return pacer

    def status(self) -> list[dict[str, Any]]:
        return [p.snapshot() for p in self._keys.values()]

    def total_queued(self) -> int:
        return sum(p.queue_length for p in self._keys.values())


@dataclass(frozen=True)
class PacingContext:
    """One client request's place under its key's rate limit."""

    pacer: KeyPacer
    deadline: float
    """When the client stops waiting (the pacer's clock)."""
    estimates: Sequence[int] = ()
    """Per-input token estimates of the request (set once the request is planned)."""

    def tokens(self, start: int, end: int) -> int:
        return sum(self.estimates[start:end]) if self.estimates else 0

    def check_fits(self, ranges: Sequence[tuple[int, int]], clock: Clock = time.monotonic) -> None:
        """Refuse at once (`PacingRefused`) when the last of `ranges` could not start in time."""
        start = self.pacer.projected_start_many([self.tokens(a, b) for a, b in ranges])
        wait = start - clock()
        if start > self.deadline:
            self.pacer.stats.refused += 1
            raise PacingRefused(
                f"under the rate limit of this API key ({self.pacer.describe()}) this request's "
                f"{len(ranges)} upstream request(s) could not all start for {wait:.1f} s, longer "
                "than the client waits; send fewer inputs per request, or raise the client's "
                "timeout",
                wait,
            )


class _Answer(Protocol):
    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> dict[str, str]: ...

    @property
    def body(self) -> dict[str, Any]: ...


async def paced_send(
    pacer: KeyPacer,
    tokens: int,
    deadline: float,
    send: Callable[[], Awaitable[_A]],
    *,
    clock: Clock = time.monotonic,
) -> tuple[_A, int | None]:
    """Send one upstream request within `pacer`'s budget; returns the answer and the tokens the
    service reported (None if it did not say).

    An upstream 429 holds the key for its `Retry-After` and the request is sent again if the
    client will still be waiting then; otherwise the 429 is the answer. Raises `PacingRefused`
    when the request cannot be let through before `deadline`.
    """
    while True:
        grant = await pacer.acquire(tokens, max_wait=deadline - clock())
        answer = await send()
        pacer.observe(answer.headers)
        if answer.status_code == 429:
            wait = retry_after_seconds(answer.headers)
            pacer.hold(wait if wait is not None else pacer.limits.window_seconds)
            if clock() + (wait or pacer.limits.window_seconds) < deadline:
                logger.info("%s: the service answered 429; sending again when allowed", pacer.label)
                continue
            return answer, None
        reported = None
        if 200 <= answer.status_code < 300:
            usage = answer.body.get("usage")
            value = usage.get("prompt_tokens") if isinstance(usage, dict) else None
            if isinstance(value, int) and not isinstance(value, bool):
                reported = value
        grant.settle(reported)
        return answer, reported


# -- headers --------------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(value: str) -> float | None:
    """OpenAI's reset durations ("1s", "6m0s", "120ms", "1h2m3.5s") or plain seconds."""
    text = value.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            return None
        number, unit = float(match.group(1)), match.group(2)
        total += number * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


def parse_rate_headers(headers: Mapping[str, str]) -> dict[str, float]:
    """The `x-ratelimit-*` values present and well-formed, by short name."""
    lowered = {k.lower(): v for k, v in headers.items()}
    out: dict[str, float] = {}
    for kind in ("requests", "tokens"):
        for field in ("limit", "remaining"):
            raw = lowered.get(f"x-ratelimit-{field}-{kind}")
            if raw is not None and raw.strip().isdigit():
                out[f"{field}_{kind}"] = float(raw.strip())
        raw = lowered.get(f"x-ratelimit-reset-{kind}")
        if raw is not None:
            seconds = parse_duration(raw)
            if seconds is not None:
                out[f"reset_{kind}"] = seconds
    return out


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms` or `Retry-After` (delta-seconds) of an upstream answer."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = lowered.get(name)
        if raw is None:
            continue
        try:
            value = float(raw.strip()) * scale
        except ValueError:
            continue
        if value >= 0 and math.isfinite(value):
            return value
    return None


def client_patience(headers: Mapping[str, str], default: float) -> float:
    """Seconds a client will wait for its answer, as it told us (`X-Stainless-Timeout`, which
    OpenAI's SDK and our classes send), else `default`. A share is kept for the request itself."""
    raw = headers.get("x-stainless-timeout")
    timeout = default
    if raw is not None:
        try:
            value = float(raw)
        except ValueError:
            value = default
        if math.isfinite(value) and value > 0:
            timeout = value
    return max(timeout - max(1.0, 0.1 * timeout), 0.0)


# -- splitting ------------------------------------------------------------------------------------


def fit_ranges_to_budget(
    ranges: Sequence[tuple[int, int]], estimates: Sequence[int], budget: int | None
) -> list[tuple[int, int]]:
    """`ranges` cut further so that each one's estimated tokens fit `budget` (one window's).

    An input whose estimate alone is over the budget keeps a range of its own: it is let through
    as the window's whole budget (the estimate may be high; if it is not, the service decides).
    """
    if budget is None:
        return list(ranges)
    out: list[tuple[int, int]] = []
    for start, end in ranges:
        begin, tokens = start, 0
        for i in range(start, end):
            if i > begin and tokens + estimates[i] > budget:
                out.append((begin, i))
                begin, tokens = i, 0
            tokens += estimates[i]
        out.append((begin, end))
    return out
