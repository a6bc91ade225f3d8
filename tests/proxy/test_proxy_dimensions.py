"""`dimensions` as the real service serves them: only some Matryoshka sizes upstream, any offered
size to clients (the proxy asks for the next served size and truncates + re-normalises).

The real service serves qwen3-embedding-4b with `matryoshka_dimensions: [1024, 2560]`, which the
local MiniLM can't be. The stand-in is the test model `MATRYOSHKA_STAND_IN` below: the local
backend serves the MiniLM engine under that name with served sizes [128, 384] (any other
`dimensions` is a 400, as vLLM answers), and the proxy's catalogue offers 16..384 for it. Its
truncated vectors are not meaningful embeddings (MiniLM is not Matryoshka-trained); they are
exactly what tells whether the proxy asked for the right size and truncated it right.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import numpy as np
import pytest
from _proxyhelpers import start_proxy, wait_upstream
from privatemode_proxy import LocalStack
from privatemode_proxy._catalogue import ALL_MINILM_L6_V2, CATALOGUE, QWEN3_EMBEDDING_4B
from privatemode_proxy._serving import ServerThread
from privatemode_proxy.local import LocalBackend

MATRYOSHKA_STAND_IN = replace(
    ALL_MINILM_L6_V2,
    id="test-matryoshka-stand-in",
    min_dimensions=16,
    matryoshka=True,
    served_dimensions=(128, 384),
)
MODEL = MATRYOSHKA_STAND_IN.id
TEXTS = ["Confidential computing keeps data encrypted in use.", "Der Bericht ist fertig.", ""]
EMBEDDINGS = "/v1/embeddings"


@pytest.fixture(scope="module")
def matryoshka_backend(
    local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalBackend]:
    shared = local_stack.backend
    backend = LocalBackend(
        tmp_path_factory.mktemp("matryoshka"),
        identity=shared.identity,
        engine=shared.engine,
        model_info=MATRYOSHKA_STAND_IN,
    )
    backend.start()
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def proxy(matryoshka_backend: LocalBackend) -> Iterator[ServerThread]:
    server = start_proxy(
        matryoshka_backend,
        catalogue={**CATALOGUE, MODEL: MATRYOSHKA_STAND_IN},
        token_counters={MODEL: matryoshka_backend.engine.count_tokens},
    )
    assert wait_upstream(server.url)["upstream"] == "ready"
    yield server
    server.stop()


def _post(url: str, **fields: Any) -> httpx.Response:
    body = {"model": MODEL, "input": TEXTS, "encoding_format": "base64", **fields}
    return httpx.post(url + EMBEDDINGS, json=body, timeout=60)


def _vectors(resp: httpx.Response) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    rows = [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in resp.json()["data"]]
    return np.stack(rows)


def _truncated(full: np.ndarray, n: int) -> np.ndarray:
    head = full[:, :n].astype(np.float64)
    return head / np.linalg.norm(head, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def full(proxy: ServerThread) -> np.ndarray:
    return _vectors(_post(proxy.url))


def test_served_size_is_asked_as_it_is(proxy: ServerThread, full: np.ndarray) -> None:
    got = _vectors(_post(proxy.url, dimensions=128))
    assert got.shape == (3, 128)
    np.testing.assert_allclose(got, _truncated(full, 128), atol=1e-6)
    assert _vectors(_post(proxy.url, dimensions=384)).shape == (3, 384)


@pytest.mark.parametrize("size", [129, 200, 383])
def test_size_between_served_sizes(proxy: ServerThread, full: np.ndarray, size: int) -> None:
    got = _vectors(_post(proxy.url, dimensions=size))
    assert got.shape == (3, size)
    np.testing.assert_allclose(got, _truncated(full, size), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("size", [16, 64, 127])
def test_size_below_the_smallest_served(proxy: ServerThread, full: np.ndarray, size: int) -> None:
    served_128 = _vectors(_post(proxy.url, dimensions=128))
    got = _vectors(_post(proxy.url, dimensions=size))
    assert got.shape == (3, size)
    # The first `size` values of the 128 (or the full) vector, re-normalised.
    np.testing.assert_allclose(got, _truncated(served_128, size), atol=1e-6)
    np.testing.assert_allclose(got, _truncated(full, size), atol=1e-6)


@pytest.mark.parametrize("size", [0, -3, 15, 385, 4096, "256", 1.5, True])
def test_invalid_size_is_refused_before_anything_is_sent(
    proxy: ServerThread, matryoshka_backend: LocalBackend, size: object
) -> None:
    before = matryoshka_backend.request_log.count(EMBEDDINGS)
    resp = _post(proxy.url, dimensions=size)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == "dimensions"
    assert matryoshka_backend.request_log.count(EMBEDDINGS) == before


def test_the_stand_in_refuses_sizes_it_does_not_serve(matryoshka_backend: LocalBackend) -> None:
    """Without the served sizes in its catalogue, the proxy forwards 200 as it is: the backend
    answers 400, as the real service does, and the proxy passes it on."""
    naive = start_proxy(
        matryoshka_backend,
        catalogue={**CATALOGUE, MODEL: replace(MATRYOSHKA_STAND_IN, served_dimensions=None)},
        token_counters={MODEL: matryoshka_backend.engine.count_tokens},
    )
    try:
        wait_upstream(naive.url)
        resp = _post(naive.url, dimensions=200)
        assert resp.status_code == 400
        assert "serves 'dimensions' [128, 384] only" in resp.json()["error"]["message"]
        assert _post(naive.url, dimensions=128).status_code == 200
    finally:
        naive.stop()


def test_qwen3_catalogue_asks_only_for_what_the_service_serves() -> None:
    qwen = QWEN3_EMBEDDING_4B
    assert qwen.served_dimensions == (1024, 2560)
    assert (qwen.min_dimensions, qwen.native_dimensions) == (32, 2560)  # offered to clients
    assert qwen.upstream_dimensions(None) is None
    assert qwen.upstream_dimensions(32) == 1024
    assert qwen.upstream_dimensions(256) == 1024
    assert qwen.upstream_dimensions(1024) == 1024
    assert qwen.upstream_dimensions(1025) is None  # the native 2560: `dimensions` left out
    assert qwen.upstream_dimensions(2560) is None
    assert qwen.check_dimensions(31) is not None and qwen.check_dimensions(2561) is not None
    assert "multilingual-e5-large" not in CATALOGUE  # no longer deployed


def test_local_backend_serving_qwen3_sizes_refuses_others() -> None:
    """What the backend answers for qwen3's catalogue entry: the service's two sizes only."""
    from privatemode_proxy.local._app import _check_served_dimensions
    from privatemode_proxy.openai import ApiError

    for ok in (None, 1024, 2560):
        _check_served_dimensions(ok, QWEN3_EMBEDDING_4B)
    for unserved in (32, 256, 1023, 2000):
        with pytest.raises(ApiError) as caught:
            _check_served_dimensions(unserved, QWEN3_EMBEDDING_4B)
        assert "serves 'dimensions' [1024, 2560] only" in caught.value.message
