"""The backend's exchanged secrets, by secret ID, each with a time to live.

The real service forgets a secret after its lifetime (and on restart); a client then gets
`no secret for ID` and exchanges a new one. The clock is injectable so tests can expire secrets
without waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

DEFAULT_SECRET_TTL = timedelta(hours=1)
DEFAULT_MAX_SECRETS = 100_000

Clock = Callable[[], float]
"""Seconds on a monotonic scale (time.monotonic by default)."""


def ttl_seconds(ttl: float | timedelta) -> float:
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if not seconds > 0:
        raise ValueError(f"the secret time to live must be positive, got {seconds} s")
    return seconds


class SecretStore:
    """Thread-safe map secret ID -> 32-byte key that forgets entries after `ttl`.

    `get` has the signature `ResponseCipher` expects for its lookup. The store never shows keys:
    its repr gives the count only. When full, the oldest secrets are dropped first.
    """

    def __init__(
        self,
        ttl: float | timedelta = DEFAULT_SECRET_TTL,
        *,
        clock: Clock = time.monotonic,
        max_secrets: int = DEFAULT_MAX_SECRETS,
    ) -> None:
        if max_secrets < 1:
            raise ValueError("max_secrets must be at least 1")
        self._ttl = ttl_seconds(ttl)
        self._clock = clock
        self._max = max_secrets
        self._lock = threading.Lock()
        # Insertion order is expiry order (one TTL for all), so the oldest entries come first.
        self._entries: dict[str, tuple[bytes, float]] = {}

    @property
    def ttl(self) -> float:
        """The time to live in seconds."""
        return self._ttl

    def put(self, secret_id: str, key: bytes) -> None:
        now = self._clock()
        with self._lock:
            self._purge_locked(now)
            self._entries.pop(secret_id, None)  # re-insert at the end: it is now the newest
            self._entries[secret_id] = (bytes(key), now + self._ttl)
            while len(self._entries) > self._max:
                del self._entries[next(iter(self._entries))]

    def get(self, secret_id: str) -> bytes | None:
        """The key stored under `secret_id`, or None if unknown or expired."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(secret_id)
            if entry is None:
                return None
            key, expires_at = entry
            if now >= expires_at:
                del self._entries[secret_id]
                return None
            return key

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        now = self._clock()
        with self._lock:
            self._purge_locked(now)
            return len(self._entries)

    def __contains__(self, secret_id: object) -> bool:
        return isinstance(secret_id, str) and self.get(secret_id) is not None

    def __repr__(self) -> str:
        return f"SecretStore(<{len(self)} secrets>, ttl={self._ttl:g} s)"

    def _purge_locked(self, now: float) -> None:
        while self._entries:
            oldest = next(iter(self._entries))
            if self._entries[oldest][1] > now:
                break
            del self._entries[oldest]
