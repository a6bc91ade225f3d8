"""Helpers for the proxy tests: start a proxy in front of a given local backend, call it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from privatemode_proxy import (
    BatchLimits,
    ProxyConfig,
    SessionConfig,
    create_proxy_app,
    pinned_manifest,
)
from privatemode_proxy._batching import TokenCounter
from privatemode_proxy._catalogue import CATALOGUE, ModelInfo
from privatemode_proxy._serving import ServerThread
from privatemode_proxy.attestation import load_trusted_root

MODEL = "all-minilm-l6-v2"


def start_proxy(
    backend: Any,
    *,
    api_url: str | None = None,
    manifest: bytes | None = None,
    limits: BatchLimits | None = None,
    token_counters: dict[str, TokenCounter] | None = None,
    session_options: dict[str, Any] | None = None,
    catalogue: dict[str, ModelInfo] | None = None,
) -> ServerThread:
    """A proxy (real app, real uvicorn) trusting `backend`'s root, pinning its manifest."""
    session = SessionConfig(
        api_url=api_url or backend.url,
        trusted_roots=tuple(load_trusted_root(Path(backend.root_pem_path))),
        manifest=pinned_manifest(
            manifest if manifest is not None else Path(backend.manifest_path).read_bytes()
        ),
        **(session_options or {}),
    )
    counters = (
        token_counters
        if token_counters is not None
        else {backend.model_id: backend.engine.count_tokens}
    )
    config = ProxyConfig(
        session=session,
        limits=limits or BatchLimits(),
        local_mode=True,
        token_counters=counters,
        catalogue=catalogue if catalogue is not None else dict(CATALOGUE),
    )
    server = ServerThread(create_proxy_app(config))
    server.start()
    return server


def wait_upstream(proxy_url: str, *, timeout: float = 60.0) -> dict[str, Any]:
    """Poll /healthz until the proxy's upstream is 'ready' or 'failed'; return the last body."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = httpx.get(proxy_url + "/healthz", timeout=10).json()
        if body["upstream"] in ("ready", "failed"):
            return body
        time.sleep(0.05)
    raise TimeoutError(f"proxy upstream still {body}")


def post_embeddings(proxy_url: str, body: dict[str, Any], timeout: float = 120.0) -> httpx.Response:
    return httpx.post(proxy_url + "/v1/embeddings", json=body, timeout=timeout)
