"""A thread-safe count of the requests a server received, per path.

Tests read it to prove what reached the backend (for example that no `/v1/embeddings` request
arrived before attestation failed). It records paths only: never headers or bodies.
"""

from __future__ import annotations

import threading
from collections import Counter

from starlette.types import ASGIApp, Receive, Scope, Send


class RequestLog:
    """Requests received, per URL path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def record(self, path: str) -> None:
        with self._lock:
            self._counts[path] += 1

    def count(self, path: str) -> int:
        with self._lock:
            return self._counts[path]

    def __getitem__(self, path: str) -> int:
        return self.count(path)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()

    def __repr__(self) -> str:
        return f"RequestLog({self.snapshot()!r})"


class RequestLogMiddleware:
    """ASGI middleware that records every HTTP request's path before the app sees it."""

    def __init__(self, app: ASGIApp, log: RequestLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.log.record(scope["path"])
        await self.app(scope, receive, send)
