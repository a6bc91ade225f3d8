"""Upstream error answers reach the app as the service sent them: status, body, headers.

The stand-in for the service's error answers is the fault relay in front of the real local
backend: it answers `/v1/embeddings` with a scripted status, body and headers (the backend
itself can't be told to answer 403 or 503 on cue). Attestation and exchange are real.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from privatemode_proxy._serving import ServerThread
from privatemode_proxy.local import LocalBackend
from reliability_relay import Action, Exchange, FaultRelay, Response, openai_error, respond
from reliability_support import (
    EMBEDDINGS,
    TEXTS,
    embed,
    seal_response,
    start_proxy,
    wait_upstream,
)

RATE_HEADERS = {
    "Retry-After": "17",
    "x-ratelimit-limit-requests": "20",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "17s",
}

CASES: dict[int, tuple[str, str, dict[str, str]]] = {
    400: ("dimensions 300 is not supported by this model", "invalid_request_error", {}),
    401: ("invalid API key", "authentication_error", {"WWW-Authenticate": "Bearer"}),
    403: ("this key may not use this model", "permission_error", {}),
    404: ("model 'x' not found", "not_found_error", {}),
    429: ("rate limit reached: 20 requests per minute", "rate_limit_error", RATE_HEADERS),
    500: ("the worker failed", "server_error", {}),
    503: ("overloaded, try again later", "server_error", {"Retry-After": "3"}),
}


@pytest.fixture()
def proxy(backend: LocalBackend, relay: FaultRelay) -> Iterator[ServerThread]:
    server = start_proxy(backend, api_url=relay.url)
    assert wait_upstream(server.url)["upstream"] == "ready"
    yield server
    server.stop()


def _plain_error(status: int, message: str, error_type: str, headers: dict[str, str]) -> Action:
    body = orjson.loads(openai_error(message, type_=error_type, code=f"code_{status}"))
    body["error"]["param"] = "input" if status == 400 else None
    return respond(status, body, {"Privatemode-Encrypted": "false", **headers})


@pytest.mark.parametrize("status", list(CASES))
def test_upstream_error_passes_through(
    proxy: ServerThread, relay: FaultRelay, backend: LocalBackend, status: int
) -> None:
    message, error_type, headers = CASES[status]
    relay.on(EMBEDDINGS, _plain_error(status, message, error_type, headers))
    before = backend.request_log.count(EMBEDDINGS)
    resp = embed(proxy.url, TEXTS[:2])
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error == {
        "message": message,
        "type": error_type,
        "param": "input" if status == 400 else None,
        "code": f"code_{status}",
    }
    for name, value in headers.items():
        assert resp.headers.get(name) == value, name
    # Sent once: the proxy retries only what the protocol itself needs (no secret, a reset).
    assert len(relay.to(EMBEDDINGS)) == 1
    assert backend.request_log.count(EMBEDDINGS) == before


def _encrypted_error(backend: LocalBackend, status: int, error: dict[str, Any]) -> Action:
    """The error as the service may send it: its fields encrypted with the request's secret."""

    async def action(_relay: FaultRelay, exchange: Exchange) -> None:
        sid, nonce = exchange.secret_id, exchange.request_nonce
        assert sid is not None and nonce is not None
        key = backend.secret_store.get(sid)
        assert key is not None
        sealed = seal_response({"error": error}, key, sid, bytes.fromhex(nonce))
        assert b"dimensions" not in sealed
        exchange.response = Response(status, sealed, [("content-type", "application/json")])

    return action


def test_encrypted_error_body_is_decrypted(
    proxy: ServerThread, relay: FaultRelay, backend: LocalBackend
) -> None:
    error = {
        "message": "dimensions must be 1024 or 2560",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    relay.on(EMBEDDINGS, _encrypted_error(backend, 400, error))
    resp = embed(proxy.url, TEXTS[:1])
    assert resp.status_code == 400
    assert resp.json() == {"error": error}


def test_error_that_is_not_json_gets_the_openai_shape(
    proxy: ServerThread, relay: FaultRelay
) -> None:
    relay.on(
        EMBEDDINGS,
        respond(502, b"<html><body>502 Bad Gateway</body></html>", {"Retry-After": "5"}),
    )
    resp = embed(proxy.url, TEXTS[:1])
    assert resp.status_code == 502
    error = resp.json()["error"]
    assert error["type"] == "server_error"
    assert "502 Bad Gateway" in error["message"]
    assert resp.headers["Retry-After"] == "5"


def test_split_request_error_names_the_sub_request(
    backend: LocalBackend, relay: FaultRelay
) -> None:
    from privatemode_proxy import BatchLimits

    server = start_proxy(backend, api_url=relay.url, limits=BatchLimits(max_inputs_per_request=2))
    try:
        assert wait_upstream(server.url)["upstream"] == "ready"
        relay.on(EMBEDDINGS, _plain_error(429, "slow down", "rate_limit_error", RATE_HEADERS))
        resp = httpx.post(
            server.url + EMBEDDINGS,
            json={"model": "all-minilm-l6-v2", "input": TEXTS[:4]},
            timeout=60,
        )
        assert resp.status_code == 429
        message = resp.json()["error"]["message"]
        assert message.startswith("slow down (sub-request "), message
        assert " of 2, inputs " in message
        assert resp.headers["Retry-After"] == "17"
    finally:
        server.stop()
