"""The local stack: the bundled local backend and the proxy, both in this process.

For tests, notebooks, the demo and the framework classes' local mode. The proxy trusts the local
backend's own root and pins its manifest, and nothing else, so the whole real path runs:
attestation, manifest check, secret exchange, field encryption, the model.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from privatemode_proxy._batching import BatchLimits
from privatemode_proxy._server import create_proxy_app
from privatemode_proxy._service import ProxyConfig
from privatemode_proxy._serving import ServerThread
from privatemode_proxy._session import SessionConfig, pinned_manifest


class LocalStack:
    """Local backend + proxy on free ports of 127.0.0.1; `base_url` is what OpenAI clients take.

    `workspace` keeps the backend's keys between runs; by default the per-user cache directory
    (`~/.cache/privatemode/local-backend/`, or `$PRIVATEMODE_CACHE_DIR/local-backend/`), so
    the keys are made once per user and a later start only loads them. Nothing is written
    elsewhere: no temporary directory to leave behind when the process is killed.
    """

    def __init__(
        self,
        workspace: str | Path | None = None,
        *,
        limits: BatchLimits | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 120.0,
        backend_options: dict[str, Any] | None = None,
        session_options: dict[str, Any] | None = None,
        log_level: str = "warning",
    ) -> None:
        self._workspace_arg = Path(workspace) if workspace is not None else None
        self._limits = limits or BatchLimits()
        self._host = host
        self._startup_timeout = startup_timeout
        self._backend_options = dict(backend_options or {})
        self._session_options = dict(session_options or {})
        self._log_level = log_level
        self._backend: Any = None
        self._proxy: ServerThread | None = None
        self._app: Any = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LocalStack:
        """Start both servers and wait until the proxy has attested the backend."""
        if self._proxy is not None:
            return self
        from privatemode_proxy._paths import local_backend_workspace
        from privatemode_proxy.attestation import load_trusted_root
        from privatemode_proxy.local import LocalBackend

        workspace = self._workspace_arg or local_backend_workspace()
        try:
            backend = LocalBackend(workspace, host=self._host, **self._backend_options)
            backend.start()
            self._backend = backend
            session = SessionConfig(
                api_url=backend.url,
                trusted_roots=tuple(load_trusted_root(Path(backend.root_pem_path))),
                manifest=pinned_manifest(Path(backend.manifest_path).read_bytes()),
                **backend.identity.tdx_session_options(),
                **self._session_options,
            )
            config = ProxyConfig(
                session=session,
                limits=self._limits,
                local_mode=True,
                # Exact counts with the backend's own tokenizer, loaded once for both.
                token_counters={backend.model_id: backend.engine.count_tokens},
            )
            self._app = create_proxy_app(config)
            proxy = ServerThread(self._app, host=self._host, log_level=self._log_level)
            proxy.start()
            self._proxy = proxy
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        last: dict[str, Any] = {}
        with httpx.Client(timeout=10.0) as client:
            while time.monotonic() < deadline:
                last = client.get(self.proxy_url + "/healthz").json()
                if last.get("upstream") == "ready":
                    return
                if last.get("upstream") == "failed":
                    raise RuntimeError(f"the proxy could not use the local backend: {last}")
                time.sleep(0.05)
        raise TimeoutError(
            f"the proxy did not attest the local backend in {self._startup_timeout} s: {last}"
        )

    def stop(self) -> None:
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
            self._app = None
        if self._backend is not None:
            self._backend.stop()
            self._backend = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what callers use ----------------------------------------------------------------------

    @property
    def backend(self) -> Any:
        """The running `LocalBackend`."""
        if self._backend is None:
            raise RuntimeError("the local stack is not running; call start()")
        return self._backend

    @property
    def proxy_url(self) -> str:
        """The proxy's root URL, e.g. http://127.0.0.1:PORT."""
        if self._proxy is None:
            raise RuntimeError("the local stack is not running; call start()")
        return self._proxy.url

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (ends in /v1)."""
        return self.proxy_url + "/v1"

    def attestation_summary(self) -> dict[str, Any]:
        """What the proxy attested and until when its secret is used (never the secret)."""
        with httpx.Client(timeout=10.0) as client:
            response = client.get(self.proxy_url + "/", params={"format": "json"})
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result

    def __repr__(self) -> str:
        state = f"proxy={self._proxy.url}" if self._proxy is not None else "stopped"
        return f"LocalStack({state})"
