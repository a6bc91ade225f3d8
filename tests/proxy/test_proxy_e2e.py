"""End to end through the proxy and the local backend, over real HTTP on 127.0.0.1.

Real attestation, real HPKE exchange, real field encryption and the real model: nothing here is
faked. Each test states what went to the backend by reading the backend's request log.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import numpy as np
import pytest
from _proxyhelpers import MODEL, post_embeddings, start_proxy, wait_upstream
from privatemode_proxy import BatchLimits, LocalStack

TEXTS = [
    "Confidential computing keeps data encrypted while it is processed.",
    "The quarterly report is due on Friday.",
    "Ein Satz auf Deutsch, mit Umlauten: äöü ß.",
    "東京は日本の首都です。",
    "",
    "short",
    "A much longer text about retrieval-augmented generation, " * 4,
    "emoji 🙂 and symbols ∑ ∫ √",
    "The cat sat on the mat.",
    "Vectors are compared with cosine similarity.",
]


def _vectors(resp: httpx.Response) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    rows = []
    for d in data:
        assert d["object"] == "embedding"
        emb = d["embedding"]
        if isinstance(emb, str):
            rows.append(np.frombuffer(base64.b64decode(emb), dtype="<f4"))
        else:
            rows.append(np.asarray(emb, dtype=np.float32))
    return np.stack(rows)


def _embeddings_count(stack_or_backend: Any) -> int:
    backend = (
        stack_or_backend.backend if isinstance(stack_or_backend, LocalStack) else (stack_or_backend)
    )
    return int(backend.request_log.count("/v1/embeddings"))


@pytest.fixture(scope="module")
def reference(local_stack: LocalStack) -> np.ndarray:
    """Each text embedded on its own (float), the baseline for batch and split results."""
    rows = [
        _vectors(post_embeddings(local_stack.proxy_url, {"model": MODEL, "input": t}))[0]
        for t in TEXTS
    ]
    return np.stack(rows)


def test_single_input(local_stack: LocalStack) -> None:
    before = _embeddings_count(local_stack)
    resp = post_embeddings(local_stack.proxy_url, {"model": MODEL, "input": "hello world"})
    vectors = _vectors(resp)
    body = resp.json()
    assert body["object"] == "list"
    assert body["model"] == MODEL
    assert vectors.shape == (1, 384)
    assert abs(float(np.linalg.norm(vectors[0])) - 1.0) < 1e-4
    # "hello world" is 2 word pieces + [CLS] + [SEP]
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert _embeddings_count(local_stack) == before + 1


def test_batch_matches_single_inputs_in_order(
    local_stack: LocalStack, reference: np.ndarray
) -> None:
    resp = post_embeddings(local_stack.proxy_url, {"model": MODEL, "input": TEXTS})
    vectors = _vectors(resp)
    assert vectors.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(vectors, reference, atol=1e-5)
    # distinct texts give distinct vectors: the comparison above would catch a permutation
    sims = reference @ reference.T
    assert np.all(sims[~np.eye(len(TEXTS), dtype=bool)] < 0.999)


def test_split_batch_equals_unsplit(local_stack: LocalStack, reference: np.ndarray) -> None:
    backend = local_stack.backend
    proxy = start_proxy(backend, limits=BatchLimits(max_inputs_per_request=3))
    try:
        assert wait_upstream(proxy.url)["upstream"] == "ready"
        before = _embeddings_count(backend)
        resp = post_embeddings(proxy.url, {"model": MODEL, "input": TEXTS})
        split = _vectors(resp)
        # 10 inputs, at most 3 per sub-request -> 4 sub-requests reached the backend
        assert _embeddings_count(backend) == before + 4
        unsplit = _vectors(post_embeddings(local_stack.proxy_url, {"model": MODEL, "input": TEXTS}))
        np.testing.assert_allclose(split, unsplit, atol=1e-6)
        np.testing.assert_allclose(split, reference, atol=1e-5)
        counts = backend.engine.count_tokens(TEXTS)
        assert resp.json()["usage"]["prompt_tokens"] == sum(counts)
    finally:
        proxy.stop()


def test_split_by_token_limit(local_stack: LocalStack, reference: np.ndarray) -> None:
    backend = local_stack.backend
    counts = backend.engine.count_tokens(TEXTS)
    limit = max(counts) + 5  # every input fits alone, no two long ones together
    proxy = start_proxy(backend, limits=BatchLimits(max_tokens_per_request=limit))
    try:
        wait_upstream(proxy.url)
        before = _embeddings_count(backend)
        resp = post_embeddings(
            proxy.url, {"model": MODEL, "input": TEXTS, "encoding_format": "base64"}
        )
        np.testing.assert_allclose(_vectors(resp), reference, atol=1e-5)
        sent = _embeddings_count(backend) - before
        assert sent >= 2
        assert sent >= -(-sum(counts) // limit)
    finally:
        proxy.stop()


@pytest.mark.parametrize("encoding_format", ["float", "base64", None])
def test_encodings(
    local_stack: LocalStack, reference: np.ndarray, encoding_format: str | None
) -> None:
    body: dict[str, Any] = {"model": MODEL, "input": TEXTS[:4]}
    if encoding_format is not None:
        body["encoding_format"] = encoding_format
    resp = post_embeddings(local_stack.proxy_url, body)
    data = resp.json()["data"]
    if encoding_format == "base64":
        assert all(isinstance(d["embedding"], str) for d in data)
        # OpenAI's layout: little-endian float32, 4 bytes per dimension
        assert all(len(base64.b64decode(d["embedding"])) == 384 * 4 for d in data)
    else:
        assert all(isinstance(d["embedding"], list) for d in data)
        assert all(isinstance(x, float) for x in data[0]["embedding"])
    np.testing.assert_allclose(_vectors(resp), reference[:4], atol=1e-5)


def test_base64_and_float_are_the_same_numbers(local_stack: LocalStack) -> None:
    body = {"model": MODEL, "input": TEXTS[:3]}
    as_float = _vectors(
        post_embeddings(local_stack.proxy_url, {**body, "encoding_format": "float"})
    )
    as_b64 = _vectors(post_embeddings(local_stack.proxy_url, {**body, "encoding_format": "base64"}))
    # float JSON carries the shortest repr of each float32, so both decode to the same bits
    assert np.array_equal(as_float, as_b64)


def test_dimensions(local_stack: LocalStack) -> None:
    before = _embeddings_count(local_stack)
    ok = post_embeddings(local_stack.proxy_url, {"model": MODEL, "input": "x", "dimensions": 384})
    assert _vectors(ok).shape == (1, 384)
    assert _embeddings_count(local_stack) == before + 1

    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": MODEL, "dimensions": 128}, "does not support reduced dimensions"),
        ({"model": MODEL, "dimensions": 0}, "positive integer"),
        ({"model": MODEL, "dimensions": "64"}, "positive integer"),
        ({"model": MODEL, "dimensions": True}, "positive integer"),
        ({"model": "qwen3-embedding-4b", "dimensions": 16}, "between 32 and 2560"),
        ({"model": "qwen3-embedding-4b", "dimensions": 4096}, "between 32 and 2560"),
    ]
    for extra, expected in cases:
        resp = post_embeddings(local_stack.proxy_url, {"input": ["a", "b"], **extra})
        assert resp.status_code == 400, (extra, resp.text)
        error = resp.json()["error"]
        assert expected in error["message"], (extra, error)
        assert error["param"] == "dimensions"
        assert error["type"] == "invalid_request_error"
    # nothing of the refused requests went upstream
    assert _embeddings_count(local_stack) == before + 1


@pytest.mark.parametrize("token_input", [[1, 2, 3], [[1, 2, 3], [4, 5]], ["ok", [1, 2]]])
def test_token_arrays_are_refused(local_stack: LocalStack, token_input: list[Any]) -> None:
    before = _embeddings_count(local_stack)
    resp = post_embeddings(local_stack.proxy_url, {"model": MODEL, "input": token_input})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert "check_embedding_ctx_length=False" in error["message"]
    assert "strings" in error["message"]
    assert error["param"] == "input"
    assert _embeddings_count(local_stack) == before


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"input": "x"}', 400, "'model' is required"),
        (b'{"model": "all-minilm-l6-v2"}', 400, "'input' is required"),
        (b'{"model": "all-minilm-l6-v2", "input": []}', 400, "empty"),
        (b'{"model": "all-minilm-l6-v2", "input": 5}', 400, "string or a list of strings"),
        (b'{"model": "all-minilm-l6-v2", "input": [{"a": 1}]}', 400, "input[0]"),
        (
            b'{"model": "all-minilm-l6-v2", "input": "x", "encoding_format": "int8"}',
            400,
            "encoding_format",
        ),
    ],
)
def test_bad_requests_get_openai_errors(
    local_stack: LocalStack, body: bytes, status: int, fragment: str
) -> None:
    resp = httpx.post(
        local_stack.proxy_url + "/v1/embeddings",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == status
    error = resp.json()["error"]
    assert set(error) - {"input_index"} == {"message", "type", "param", "code"}
    assert error.get("input_index") == (0 if fragment == "input[0]" else None)
    assert fragment in error["message"]
    # and the server keeps serving
    ok = post_embeddings(local_stack.proxy_url, {"model": MODEL, "input": "still alive"})
    assert ok.status_code == 200


def test_over_long_input_is_refused_before_sending(local_stack: LocalStack) -> None:
    before = _embeddings_count(local_stack)
    long_text = "word " * 300  # > 256 tokens with the local tokenizer
    resp = post_embeddings(local_stack.proxy_url, {"model": MODEL, "input": ["fine", long_text]})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert "input 1 has 302 tokens" in error["message"]
    assert "at most 256" in error["message"]
    assert _embeddings_count(local_stack) == before


def test_unknown_model_error_from_upstream_is_passed_on(local_stack: LocalStack) -> None:
    resp = post_embeddings(local_stack.proxy_url, {"model": "no-such-model", "input": "x"})
    assert resp.status_code == 404
    error = resp.json()["error"]
    assert "no-such-model" in error["message"]


def test_failed_sub_request_fails_the_whole_request(local_stack: LocalStack) -> None:
    backend = local_stack.backend
    # A token counter that under-counts, so the over-long input is not caught by the proxy but
    # by the backend, in the third of four sub-requests.
    proxy = start_proxy(
        backend,
        limits=BatchLimits(max_inputs_per_request=2, max_concurrent_subrequests=1),
        token_counters={MODEL: lambda texts: [1] * len(texts)},
    )
    try:
        wait_upstream(proxy.url)
        before = _embeddings_count(backend)
        inputs = ["a", "b", "c", "d", "word " * 300, "f", "g", "h"]
        resp = post_embeddings(proxy.url, {"model": MODEL, "input": inputs})
        assert resp.status_code == 400, resp.text
        error = resp.json()["error"]
        assert "sub-request 3 of 4" in error["message"]
        assert "inputs 4..5" in error["message"]
        assert "data" not in resp.json()
        # with one sub-request at a time, the failure cancels the fourth before it is sent
        assert _embeddings_count(backend) - before == 3
    finally:
        proxy.stop()


def test_models_pass_through_with_tasks(local_stack: LocalStack) -> None:
    resp = httpx.get(local_stack.base_url + "/models")
    assert resp.status_code == 200
    entries = {m["id"]: m for m in resp.json()["data"]}
    assert entries[MODEL]["tasks"] == ["embed"]


def test_healthz(local_stack: LocalStack) -> None:
    resp = httpx.get(local_stack.proxy_url + "/healthz")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"
    assert resp.json()["upstream"] == "ready"


def test_unknown_route_is_openai_shaped(local_stack: LocalStack) -> None:
    resp = httpx.get(local_stack.proxy_url + "/v1/nothing")
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "not_found_error"
