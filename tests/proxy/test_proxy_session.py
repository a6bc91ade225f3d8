"""The secret's lifetime: shared exchanges, background refresh, exchange retries (real backend)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from _proxyhelpers import MODEL, start_proxy, wait_upstream
from _relay import TcpRelay
from privatemode_proxy import LocalStack
from privatemode_proxy.local import LocalBackend

ATTEST = "/privatemode/v1/attest"
SECRET = "/privatemode/v1/secret"


@pytest.fixture()
def backend(local_stack: LocalStack, tmp_path: Path) -> Iterator[LocalBackend]:
    b = LocalBackend(tmp_path / "backend", engine=local_stack.backend.engine)
    b.start()
    yield b
    b.stop()


def _status(proxy_url: str) -> dict[str, object]:
    body: dict[str, object] = httpx.get(proxy_url + "/", params={"format": "json"}).json()
    return body


async def _embed_concurrently(proxy_url: str, n: int) -> list[int]:
    async with httpx.AsyncClient(timeout=120) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    proxy_url + "/v1/embeddings", json={"model": MODEL, "input": f"text {i}"}
                )
                for i in range(n)
            )
        )
    return [r.status_code for r in responses]


def test_concurrent_first_requests_share_one_exchange(backend: LocalBackend) -> None:
    proxy = start_proxy(backend)
    try:
        # fired at once, before the proxy has a secret: all wait for the same exchange
        statuses = asyncio.run(_embed_concurrently(proxy.url, 16))
        assert statuses == [200] * 16
        assert backend.request_log.count(SECRET) == 1
        assert backend.request_log.count(ATTEST) == 1
        assert backend.request_log.count("/v1/embeddings") == 16
    finally:
        proxy.stop()


def test_secret_is_refreshed_in_the_background(backend: LocalBackend) -> None:
    proxy = start_proxy(
        backend,
        session_options={"secret_use_seconds": 1.5, "secret_refresh_ahead_seconds": 1.0},
    )
    try:
        assert wait_upstream(proxy.url)["upstream"] == "ready"
        first = _status(proxy.url)["secret"]
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            # never a moment without a usable secret
            assert httpx.get(proxy.url + "/healthz").json()["upstream"] == "ready"
            time.sleep(0.05)
        status = _status(proxy.url)
        # a new secret every ~0.5 s, with no request asking for one
        assert isinstance(status["secret_exchanges"], int) and status["secret_exchanges"] >= 4
        assert status["secret"] != first
        assert backend.request_log.count("/v1/embeddings") == 0
        secrets_before = backend.request_log.count(SECRET)
        started = time.monotonic()
        resp = httpx.post(proxy.url + "/v1/embeddings", json={"model": MODEL, "input": "x"})
        assert resp.status_code == 200
        assert time.monotonic() - started < 1.0
        # the request used the current secret (at most a background refresh ran meanwhile)
        assert backend.request_log.count(SECRET) - secrets_before <= 1
    finally:
        proxy.stop()


def test_failed_exchange_is_retried_after_attesting_again(backend: LocalBackend) -> None:
    parts = urlsplit(backend.url)
    assert parts.hostname is not None and parts.port is not None
    relay = TcpRelay(parts.hostname, parts.port).start()
    # the first exchange and the one after the re-attestation are cut off
    relay.reset_next(2, b"POST " + SECRET.encode())
    proxy = start_proxy(
        backend, api_url=relay.url, session_options={"exchange_retry_delay_seconds": 0.2}
    )
    try:
        health = wait_upstream(proxy.url)
        assert health["upstream"] == "ready", health
        assert relay.resets_done == 2
        # attest, exchange (reset), attest again, exchange (reset), pause, exchange (ok)
        assert backend.request_log.count(ATTEST) == 2
        assert backend.request_log.count(SECRET) == 1
        resp = httpx.post(proxy.url + "/v1/embeddings", json={"model": MODEL, "input": "x"})
        assert resp.status_code == 200
    finally:
        proxy.stop()
        relay.stop()


def test_exchange_failing_every_time_gives_503(backend: LocalBackend) -> None:
    parts = urlsplit(backend.url)
    assert parts.hostname is not None and parts.port is not None
    relay = TcpRelay(parts.hostname, parts.port).start()
    relay.reset_next(1000, b"POST " + SECRET.encode())
    proxy = start_proxy(
        backend,
        api_url=relay.url,
        session_options={
            "exchange_retry_delay_seconds": 0.05,
            "background_retry_seconds": 60.0,
        },
    )
    try:
        assert wait_upstream(proxy.url)["upstream"] == "failed"
        resp = httpx.post(proxy.url + "/v1/embeddings", json={"model": MODEL, "input": "x"})
        assert resp.status_code == 503
        error = resp.json()["error"]
        assert error["code"] == "secret_exchange_failed"
        assert "after 3 attempts" in error["message"]
        assert backend.request_log.count("/v1/embeddings") == 0
    finally:
        proxy.stop()
        relay.stop()
