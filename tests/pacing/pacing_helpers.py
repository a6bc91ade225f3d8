"""A rate-limited local backend with a proxy in front of it, both real, on free ports."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from privatemode_proxy import ProxyConfig, SessionConfig, create_proxy_app, pinned_manifest
from privatemode_proxy._pacing import RateLimits
from privatemode_proxy._serving import ServerThread
from privatemode_proxy.attestation import load_trusted_root
from privatemode_proxy.local import BackendLimits, LocalBackend, RateLimit
from privatemode_proxy.local._engine import EmbeddingEngine
from privatemode_proxy.local._issuer import LocalIdentity

MODEL = "all-minilm-l6-v2"


class PacedStack:
    """The local backend with an optional `RateLimit`, and a proxy with optional pacing."""

    def __init__(
        self,
        workspace: Path,
        identity: LocalIdentity,
        engine: EmbeddingEngine,
        *,
        backend_limit: RateLimit | None = None,
        rate_limits: RateLimits | None = None,
        backend_options: dict[str, Any] | None = None,
        proxy_options: dict[str, Any] | None = None,
    ) -> None:
        self.backend = LocalBackend(
            workspace,
            identity=identity,
            engine=engine,
            limits=BackendLimits(rate_limit=backend_limit),
            **(backend_options or {}),
        )
        self._rate_limits = rate_limits
        # A backend that requires keys is attested by the first request with a key.
        self._attest_first = not (backend_options or {}).get("api_keys")
        self._proxy_options = dict(proxy_options or {})
        self._proxy: ServerThread | None = None
        self.app: Any = None

    def start(self) -> None:
        self.backend.start()
        session = SessionConfig(
            api_url=self.backend.url,
            trusted_roots=tuple(load_trusted_root(Path(self.backend.root_pem_path))),
            manifest=pinned_manifest(Path(self.backend.manifest_path).read_bytes()),
        )
        config = ProxyConfig(
            session=session,
            local_mode=True,
            token_counters={self.backend.model_id: self.backend.engine.count_tokens},
            rate_limits=self._rate_limits,
            **self._proxy_options,
        )
        self.app = create_proxy_app(config)
        self._proxy = ServerThread(self.app)
        self._proxy.start()
        if not self._attest_first:
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = httpx.get(self.proxy_url + "/healthz", timeout=10).json()["upstream"]
            if state in ("ready", "failed"):
                assert state == "ready"
                return
            time.sleep(0.05)
        raise TimeoutError("the proxy did not attest the local backend")

    def stop(self) -> None:
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
        self.backend.stop()

    @property
    def proxy_url(self) -> str:
        assert self._proxy is not None
        return self._proxy.url

    @property
    def base_url(self) -> str:
        return self.proxy_url + "/v1"

    def upstream_embeddings(self) -> int:
        """`/v1/embeddings` requests that reached the backend."""
        return self.backend.request_log.count("/v1/embeddings")

    def refused(self) -> int:
        """429s the backend's rate limit answered."""
        limiter = self.backend.rate_limiter
        return limiter.stats.refused if limiter is not None else 0

    def admitted(self) -> int:
        limiter = self.backend.rate_limiter
        return limiter.stats.admitted if limiter is not None else 0

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(self.proxy_url + "/healthz", timeout=10).json()
        return body


def post(stack: PacedStack, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(stack.proxy_url + "/v1/embeddings", json=body, headers=headers, timeout=120)
