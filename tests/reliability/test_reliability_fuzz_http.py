"""Bad input over HTTP: random bodies to the proxy's /v1/embeddings (and to the backend's, with
valid encryption), property-based.

Any input gets either 200 with exactly one right vector per input, in order (compared with the
engine's direct output), or a 4xx in OpenAI's error shape; never a 5xx, a hang (every call has a
client timeout) or a crash: the server answers a normal request correctly afterwards.

The proxy serves no OpenAPI schema (`create_proxy_app` sets `openapi_url=None` and the handler
reads the raw body), so schemathesis has nothing to load; these strategies take its place.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from privatemode_proxy import LocalStack
from privatemode_proxy.local import LocalBackend
from privatemode_proxy.protocol import ClientSecretExchange, RequestCipher, Secret
from reliability_support import EMBEDDINGS, MODEL, TEXTS, Reference, error_of, vectors_of

SCALE = 10 if os.environ.get("RELIABILITY_SLOW") == "1" else 1
SETTINGS = settings(
    max_examples=120 * SCALE,
    deadline=None,
    derandomize=True,  # the same examples on every CI run: a failure is never a fluke
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
TIMEOUT = httpx.Timeout(60.0)

texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40
) | st.sampled_from(TEXTS)
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
inputs = (
    texts
    | st.lists(texts, min_size=0, max_size=6)
    | st.lists(st.integers(0, 50_000), max_size=4)
    | st.lists(st.lists(st.integers(0, 1000), max_size=3), max_size=3)
    | st.lists(texts | st.integers() | st.none(), max_size=4)
    | json_values
)
request_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from([MODEL, MODEL, MODEL, "", "nope", "text-embedding-3-small"])
        | json_leaves,
        "input": inputs,
        "encoding_format": st.sampled_from(["float", "base64", "binary", None]) | json_leaves,
        "dimensions": st.sampled_from([384, 383, 0, -1, 10**6]) | json_leaves,
        "user": texts | json_leaves,
        "extra": json_values,
        "input_type": st.sampled_from(["query", "passage"]),
    },
)


valid_bodies = st.fixed_dictionaries(
    {"model": st.just(MODEL), "input": texts | st.lists(texts, min_size=1, max_size=6)},
    optional={
        "encoding_format": st.sampled_from(["float", "base64"]),
        "user": texts,
        "dimensions": st.just(384),
    },
)


def _encode(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


bodies = (
    st.tuples(valid_bodies, st.booleans()).map(lambda t: _encode(*t))
    | st.tuples(request_bodies, st.booleans()).map(lambda t: _encode(*t))
    | st.tuples(json_values, st.booleans()).map(lambda t: _encode(*t))
    | st.binary(max_size=200)
)


@pytest.fixture(scope="module")
def http(local_stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=local_stack.proxy_url, timeout=TIMEOUT) as client:
        yield client


@pytest.fixture(scope="module")
def model_reference(local_stack: LocalStack) -> Reference:
    return Reference(local_stack.backend.engine, TEXTS)


class Direct:
    """The engine's own vector for a text, each text embedded alone (memoised)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.memo: dict[str, np.ndarray] = {}

    def rows(self, texts: list[str]) -> np.ndarray:
        for text in texts:
            if text not in self.memo:
                self.memo[text] = self.engine.embed([text])[0]
        return np.stack([self.memo[t] for t in texts])


@pytest.fixture(scope="module")
def direct(local_stack: LocalStack) -> Direct:
    return Direct(local_stack.backend.engine)


def _check_answer(resp: httpx.Response, sent: bytes, direct: Direct) -> None:
    assert resp.status_code < 500, f"{resp.status_code} for {sent[:200]!r}: {resp.text[:300]}"
    if resp.status_code != 200:
        assert 400 <= resp.status_code < 500
        error_of(resp)
        return
    body = orjson.loads(sent)
    given_input = body["input"]
    wanted = [given_input] if isinstance(given_input, str) else list(given_input)
    vectors = vectors_of(resp)
    assert vectors.shape == (len(wanted), 384)
    assert float(np.max(np.abs(vectors - direct.rows(wanted)))) <= 1e-5


def test_any_body_gets_vectors_or_a_clear_4xx(http: httpx.Client, direct: Direct) -> None:
    statuses: Counter[int] = Counter()

    @SETTINGS
    @given(body=bodies)
    def any_body(body: bytes) -> None:
        resp = http.post(EMBEDDINGS, content=body, headers={"Content-Type": "application/json"})
        statuses[resp.status_code] += 1
        _check_answer(resp, body, direct)

    any_body()
    # Guard: the random bodies produced real embeddings as well as refusals.
    assert statuses[200] >= 20, statuses
    assert sum(n for code, n in statuses.items() if 400 <= code < 500) >= 20, statuses


EDGE_CASES = {
    "empty": b"",
    "not-utf8": b"\xff\xfe{\x00",
    "bom": b'\xef\xbb\xbf{"model": "all-minilm-l6-v2", "input": "x"}',
    "nan": b'{"model": "all-minilm-l6-v2", "input": "x", "dimensions": NaN}',
    "deep-nesting": b'{"model": "all-minilm-l6-v2", "input": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "huge-int": b'{"model": "all-minilm-l6-v2", "input": "x", "user": 1' + b"0" * 400 + b"}",
    "duplicate-keys": b'{"model": "nope", "model": "all-minilm-l6-v2", "input": "x"}',
    "trailing-garbage": b'{"model": "all-minilm-l6-v2", "input": "x"} {}',
    "lone-surrogate": b'{"model": "all-minilm-l6-v2", "input": "\\ud800"}',
    "nul-in-text": b'{"model": "all-minilm-l6-v2", "input": "a\\u0000b"}',
    "long-input": orjson.dumps({"model": MODEL, "input": "word " * 2000}),
    "many-inputs": orjson.dumps({"model": MODEL, "input": ["x"] * 2049}),
    "one-mb-string": orjson.dumps({"model": MODEL, "input": ["ok", "é" * 500_000]}),
}


@pytest.mark.parametrize("case", list(EDGE_CASES), ids=list(EDGE_CASES))
def test_edge_case_bodies(http: httpx.Client, direct: Direct, case: str) -> None:
    body = EDGE_CASES[case]
    resp = http.post(EMBEDDINGS, content=body, headers={"Content-Type": "application/json"})
    _check_answer(resp, body, direct)


@pytest.mark.parametrize(
    "model", ["é-model", "模型", "a\nb", "tab\there"], ids=["latin1", "cjk", "newline", "tab"]
)
def test_model_names_that_cannot_be_a_header_get_a_4xx(local_stack: LocalStack, model: str) -> None:
    """The proxy copies `model` into the Privatemode-Target-Model header; a name that is not
    a valid header value must be refused as bad input, not end in a 5xx."""
    resp = httpx.post(  # a connection of its own: after a 500 uvicorn drops the connection
        local_stack.proxy_url + EMBEDDINGS, json={"model": model, "input": "x"}, timeout=TIMEOUT
    )
    assert 400 <= resp.status_code < 500, f"{resp.status_code}: {resp.text[:200]}"
    error_of(resp)


def _raw(url: str, request: bytes, timeout: float = 30.0) -> bytes:
    """Send raw bytes on a fresh connection, return whatever comes back before it closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise AssertionError("the server hung") from None
            if not data:
                return b"".join(chunks)
            chunks.append(data)


RAW_CASES = {
    "declared-body-too-large": b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: application/json\r\nContent-Length: 999999999999\r\n\r\n{}",
    "body-shorter-than-declared": b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 100\r\n\r\n{}",
    "bad-content-length": b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "chunked-body": b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b'Content-Type: application/json\r\n\r\n6\r\n{"a":1\r\n1\r\n}\r\n0\r\n\r\n',
    "wrong-method": b"GET /v1/embeddings HTTP/1.1\r\nHost: x\r\n\r\n",
    "garbage-request-line": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),
}


@pytest.mark.parametrize("case", list(RAW_CASES), ids=list(RAW_CASES))
def test_malformed_http_gets_a_4xx_or_a_closed_connection(
    local_stack: LocalStack, case: str
) -> None:
    answer = _raw(local_stack.proxy_url, RAW_CASES[case])
    if answer:  # uvicorn may just close on bytes that are not HTTP
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:200]


# -- the backend's own request handling, behind valid encryption --------------------------------


@pytest.fixture(scope="module")
def backend_secret(rel_backend: LocalBackend) -> Secret:
    exchange = ClientSecretExchange()
    resp = httpx.post(
        rel_backend.url + "/privatemode/v1/secret", content=exchange.request_body(), timeout=30
    )
    assert resp.status_code == 200
    return exchange.complete(resp.content, rel_backend.identity.mesh_ca)


@settings(SETTINGS, max_examples=80 * SCALE)
@given(body=request_bodies)
def test_backend_decrypted_body_gets_vectors_or_a_clear_4xx(
    rel_backend: LocalBackend, backend_secret: Secret, body: dict[str, Any]
) -> None:
    if not any(k != "model" for k in body):
        body = {**body, "input": "x"}  # nothing to encrypt is a protocol error of its own
    model = body.get("model")
    header_model = model if isinstance(model, str) and re.fullmatch(r"[\w.:-]+", model) else "x"
    try:
        plaintext = orjson.dumps(body)
    except TypeError:  # a >64-bit integer: orjson can't write it, nor could the proxy send it
        return
    cipher = RequestCipher(backend_secret.key, backend_secret.id)
    resp = httpx.post(
        rel_backend.url + EMBEDDINGS,
        content=cipher.encrypt_request(plaintext),
        headers={
            "Content-Type": "application/json",
            "Privatemode-Secret-ID": backend_secret.id,
            "Privatemode-Target-Model": header_model,
        },
        timeout=TIMEOUT,
    )
    assert resp.status_code < 500, f"{resp.status_code} for {plaintext[:200]!r}: {resp.text[:300]}"
    if resp.status_code == 200:
        answer = orjson.loads(cipher.decrypt_response(resp.content))
        given_input = body["input"]
        wanted = [given_input] if isinstance(given_input, str) else list(given_input)
        assert [d["index"] for d in answer["data"]] == list(range(len(wanted)))
    else:
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}


def test_servers_still_serve_after_the_fuzzing(
    local_stack: LocalStack, rel_backend: LocalBackend, model_reference: Reference
) -> None:
    resp = httpx.post(
        local_stack.proxy_url + EMBEDDINGS, json={"model": MODEL, "input": TEXTS}, timeout=TIMEOUT
    )
    model_reference.check(TEXTS, vectors_of(resp))
    health = httpx.get(local_stack.proxy_url + "/healthz", timeout=10).json()
    assert health["upstream"] == "ready"
    assert httpx.get(rel_backend.url + "/healthz", timeout=10).status_code == 200
