"""Keeps one `EmbeddingsClient` per framework object, rebuilt only when a setting changes.

The framework classes are mutable pydantic models; building the client from a snapshot of their
fields on each call (and reusing it while the snapshot is unchanged) keeps pooled connections
across calls and still honours a field assigned after construction.
"""

from __future__ import annotations

import threading
from typing import Any

from privatemode_integrations._client import EmbeddingsClient

CLIENT_FIELDS = (
    "base_url",
    "api_key",
    "dimensions",
    "batch_size",
    "max_concurrency",
    "max_retries",
    "timeout",
    "show_progress_bar",
    "default_headers",
    "http_client",
    "http_async_client",
)
"""The client settings both framework classes carry under these same field names."""


class CoreCache:
    """The current `EmbeddingsClient` for one framework object."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._client: EmbeddingsClient | None = None

    def get(self, **settings: Any) -> EmbeddingsClient:
        key = tuple(
            (name, id(value) if name.startswith("http_") else _hashable(value))
            for name, value in sorted(settings.items())
        )
        with self._lock:
            if self._client is None or key != self._key:
                old = self._client
                self._client = EmbeddingsClient(**settings)
                self._key = key
                if old is not None:
                    old.close()
            return self._client

    def for_object(self, owner: Any, *, model: str) -> EmbeddingsClient:
        """The client for a framework object's current `CLIENT_FIELDS` values and `model`."""
        return self.get(model=model, **{name: getattr(owner, name) for name in CLIENT_FIELDS})

    # A copy or an unpickled object (LlamaIndex ships transformations to worker processes) gets
    # its own connections, built on first use.
    def __deepcopy__(self, memo: dict[int, Any]) -> CoreCache:
        return CoreCache()

    def __reduce__(self) -> tuple[type[CoreCache], tuple[()]]:
        return (CoreCache, ())


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted(value.items()))
    if hasattr(value, "get_secret_value"):
        return ("secret", value.get_secret_value())
    return value
