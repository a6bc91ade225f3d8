"""The local backend over real HTTP on 127.0.0.1: attestation, secret exchange, encrypted
embeddings that match sentence-transformers, every validation error, expiry, concurrency, auth.

The client is built from the protocol core only (see conftest.ProtocolClient); the model, HPKE,
AES-GCM and the attestation verifier are the real ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from localbackend_helpers import (
    MODEL,
    ManualClock,
    ProtocolClient,
    ReferenceItem,
    cosine_distance,
    make_client,
)
from privatemode_proxy.attestation import AttestationError, verify_attestation
from privatemode_proxy.local import BackendLimits, LocalBackend
from privatemode_proxy.local._engine import EmbeddingEngine
from privatemode_proxy.local._issuer import LocalIdentity
from privatemode_proxy.protocol import (
    ClientSecretExchange,
    RequestCipher,
    SecretExchangeError,
)

LIMIT = 256  # all-minilm-l6-v2 tokens per input
MAX_INPUTS = 2048
PRIVATE = "SENSITIVE-TEXT-7c1f"  # must never come back in an error body


def usable(reference: list[ReferenceItem]) -> list[ReferenceItem]:
    return [item for item in reference if item.tokens <= LIMIT]


def over_limit(reference: list[ReferenceItem], tokens: int) -> ReferenceItem:
    return next(item for item in reference if item.tokens == tokens)


def assert_openai_error(response: httpx.Response, status: int, *needles: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    # `input_index` (the failing input, within the request) only on errors about one input
    assert set(error) - {"input_index"} == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    for needle in needles:
        assert needle in error["message"], (needle, error["message"])
    assert PRIVATE not in response.text
    assert response.headers.get("Privatemode-Encrypted") == "false"
    return dict(error)


# --- attestation and secret exchange --------------------------------------------------------


def test_first_start_wrote_root_and_manifest(backend: LocalBackend) -> None:
    assert backend.root_pem_path.is_file()
    assert b"BEGIN CERTIFICATE" in backend.root_pem_path.read_bytes()
    manifest = json.loads(backend.manifest_path.read_bytes())
    assert manifest["ReferenceValues"]["snp"]


def test_attestation_verifies_with_local_root_and_pinned_manifest(backend: LocalBackend) -> None:
    client = make_client(backend)
    try:
        result = client.attest()
    finally:
        client.close()
    manifest = backend.manifest_path.read_bytes()
    assert result.manifest_sha256 == hashlib.sha256(manifest).hexdigest()
    assert result.mesh_ca is not None


def test_attestation_fails_closed_on_wrong_nonce_or_manifest(backend: LocalBackend) -> None:
    client = make_client(backend)
    try:
        nonce = os.urandom(32)
        response = client.http.post(
            "/privatemode/v1/attest", json={"Nonce": base64.b64encode(nonce).decode()}
        )
        assert response.status_code == 200
        document = base64.b64decode(response.json()["AttestationDoc"])
        with pytest.raises(AttestationError):
            verify_attestation(
                os.urandom(32),
                document,
                expected_manifest=client.manifest,
                trusted_roots=client.trusted_roots,
            )
        other_manifest = client.manifest.replace(b"{", b'{"Extra":1,', 1)
        with pytest.raises(AttestationError):
            verify_attestation(
                nonce,
                document,
                expected_manifest=other_manifest,
                trusted_roots=client.trusted_roots,
            )
    finally:
        client.close()


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "'Nonce' is required"),
        ({"Nonce": "not base64!"}, "not valid base64"),
        ({"Nonce": base64.b64encode(b"x" * 16).decode()}, "must be 32 bytes, got 16"),
    ],
)
def test_attest_refuses_bad_nonce(backend: LocalBackend, body: dict[str, Any], needle: str) -> None:
    response = httpx.post(f"{backend.url}/privatemode/v1/attest", json=body)
    assert_openai_error(response, 400, needle)


def test_secret_exchange_is_signed_by_the_attested_mesh(backend: LocalBackend) -> None:
    client = make_client(backend)
    try:
        result = client.attest()
        secret = client.exchange()
        assert len(secret.key) == 32 and "key=<hidden>" in repr(secret)
        # A signature that doesn't verify is refused by the client: flip one byte of it.
        exchange = ClientSecretExchange()
        response = client.http.post("/privatemode/v1/secret", content=exchange.request_body())
        assert response.status_code == 200
        fields = response.json()
        signature = bytearray(base64.b64decode(fields["Signature"]))
        signature[-1] ^= 0x01
        fields["Signature"] = base64.b64encode(bytes(signature)).decode()
        with pytest.raises(SecretExchangeError):
            exchange.complete(json.dumps(fields).encode(), result.mesh_ca)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"not json", "not valid JSON"),
        (b'{"Other": "AAAA"}', "PublicKey"),
        (b'{"PublicKey": "AAAA"}', "PublicKey"),
    ],
)
def test_secret_refuses_malformed_requests(
    backend: LocalBackend, content: bytes, needle: str
) -> None:
    response = httpx.post(f"{backend.url}/privatemode/v1/secret", content=content)
    assert_openai_error(response, 400, needle)


# --- embeddings: correct vectors ------------------------------------------------------------


def test_vectors_match_sentence_transformers(
    session_client: ProtocolClient, reference: list[ReferenceItem]
) -> None:
    items = usable(reference)
    result = session_client.embeddings({"model": MODEL, "input": [i.text for i in items]})
    assert result["object"] == "list" and result["model"] == MODEL
    assert result["id"].startswith("embd-")
    assert [d["index"] for d in result["data"]] == list(range(len(items)))
    assert {d["object"] for d in result["data"]} == {"embedding"}
    for item, data in zip(items, result["data"], strict=True):
        assert len(data["embedding"]) == 384
        assert cosine_distance(np.asarray(data["embedding"]), item.embedding) < 1e-5, item.text
    tokens = sum(i.tokens for i in items)
    assert result["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_base64_encoding_is_little_endian_float32(
    session_client: ProtocolClient, reference: list[ReferenceItem]
) -> None:
    items = usable(reference)[::3]
    texts = [i.text for i in items]
    as_base64 = session_client.embeddings(
        {"model": MODEL, "input": texts, "encoding_format": "base64"}
    )
    as_float = session_client.embeddings(
        {"model": MODEL, "input": texts, "encoding_format": "float"}
    )
    for item, b64, flt in zip(items, as_base64["data"], as_float["data"], strict=True):
        raw = base64.b64decode(b64["embedding"])
        assert len(raw) == 384 * 4
        vector = np.frombuffer(raw, dtype="<f4")
        assert cosine_distance(vector, item.embedding) < 1e-5
        np.testing.assert_allclose(vector, np.asarray(flt["embedding"], np.float32), atol=1e-6)


def test_single_string_and_native_dimensions(
    session_client: ProtocolClient, reference: list[ReferenceItem]
) -> None:
    hello = next(i for i in reference if i.text == "hello")
    result = session_client.embeddings({"model": MODEL, "input": "hello", "dimensions": 384})
    assert len(result["data"]) == 1
    assert cosine_distance(np.asarray(result["data"][0]["embedding"]), hello.embedding) < 1e-5
    assert result["usage"]["prompt_tokens"] == hello.tokens


def test_response_fields_encrypted_except_id_and_usage(session_client: ProtocolClient) -> None:
    response, cipher = session_client.post_encrypted(
        {"model": MODEL, "input": ["a private sentence"], "user": "u-1"}
    )
    assert response.status_code == 200
    raw = response.json()
    assert session_client.secret is not None
    prefix = session_client.secret.id + ":"
    for field in ("data", "model", "object"):
        assert isinstance(raw[field], str) and raw[field].startswith(prefix), field
    assert raw["id"].startswith("embd-")
    assert set(raw["usage"]) == {"prompt_tokens", "total_tokens"}
    assert b"private sentence" not in response.content
    decrypted = json.loads(cipher.decrypt_response(response.content))
    assert decrypted["object"] == "list" and len(decrypted["data"]) == 1


# --- validation -----------------------------------------------------------------------------


def _cases(reference: list[ReferenceItem]) -> list[tuple[dict[str, Any], int, list[str], str]]:
    long257 = over_limit(reference, 257).text
    long1301 = over_limit(reference, 1301).text
    return [
        ({"model": "gpt-4", "input": [PRIVATE]}, 404, ["'gpt-4' does not exist", MODEL], "model"),
        ({"input": [PRIVATE]}, 400, ["'model' is required"], "model"),
        ({"model": MODEL}, 400, ["'input' is required"], "input"),
        ({"model": MODEL, "input": None}, 400, ["'input' is required"], "input"),
        ({"model": MODEL, "input": []}, 400, ["empty list"], "input"),
        ({"model": MODEL, "input": [PRIVATE, 5]}, 400, ["input[1] must be a string"], "input"),
        ({"model": MODEL, "input": {"t": PRIVATE}}, 400, ["got object"], "input"),
        (
            {"model": MODEL, "input": [101, 2023, 102]},
            400,
            ["token arrays are not supported by Privatemode", "string"],
            "input",
        ),
        (
            {"model": MODEL, "input": [[101, 102], [101, 7592, 102]]},
            400,
            ["token arrays are not supported by Privatemode"],
            "input",
        ),
        (
            {"model": MODEL, "input": ["x"] * (MAX_INPUTS + 1)},
            400,
            [f"{MAX_INPUTS + 1} given", f"at most {MAX_INPUTS}"],
            "input",
        ),
        (
            {"model": MODEL, "input": [PRIVATE, "short", long257]},
            400,
            ["input 2 has 257 tokens", f"at most {LIMIT} tokens per input"],
            "input",
        ),
        (
            {"model": MODEL, "input": [long1301, PRIVATE, long257]},
            400,
            ["input 0 has 1301 tokens", "1 more inputs"],
            "input",
        ),
        (
            {"model": MODEL, "input": [PRIVATE], "dimensions": 128},
            400,
            ["does not support reduced dimensions", "384"],
            "dimensions",
        ),
        (
            {"model": MODEL, "input": [PRIVATE], "dimensions": "384"},
            400,
            ["'dimensions' must be a positive integer"],
            "dimensions",
        ),
        (
            {"model": MODEL, "input": [PRIVATE], "encoding_format": "int8"},
            400,
            ["encoding_format", "'float' or 'base64'"],
            "encoding_format",
        ),
    ]


def test_every_validation_error(
    session_client: ProtocolClient, reference: list[ReferenceItem]
) -> None:
    for payload, status, needles, param in _cases(reference):
        response, _ = session_client.post_encrypted(payload)
        error = assert_openai_error(response, status, *needles)
        assert error["param"] == param, (payload.get("input"), error)
        named = re.search(r"input[\[ ](\d+)", needles[0])
        assert error.get("input_index") == (int(named[1]) if named else None), error
    # None of them hurt the server.
    ok = session_client.embeddings({"model": MODEL, "input": ["still serving"]})
    assert len(ok["data"]) == 1


def test_malformed_json_bodies(backend: LocalBackend, session_client: ProtocolClient) -> None:
    url = f"{backend.url}/v1/embeddings"
    for content in (b'{"model": "all-minilm-l6-v2", "input": ', b"[" * 100_000, b"\xff\xfe"):
        assert_openai_error(httpx.post(url, content=content), 400, "not valid JSON")
    assert_openai_error(httpx.post(url, content=b"[1, 2]"), 400, "must be a JSON object")
    assert session_client.embeddings({"model": MODEL, "input": "ok"})["data"]


def test_unencrypted_fields_refused(backend: LocalBackend) -> None:
    url = f"{backend.url}/v1/embeddings"
    as_list = httpx.post(url, json={"model": MODEL, "input": [PRIVATE]})
    assert_openai_error(as_list, 400, "'input' is not encrypted", "must be encrypted")
    as_string = httpx.post(url, json={"model": MODEL, "input": PRIVATE})
    assert_openai_error(as_string, 400, "not in the encrypted format")


def test_tampered_or_mixed_ciphertext_refused(
    backend: LocalBackend, session_client: ProtocolClient
) -> None:
    assert session_client.secret is not None
    secret = session_client.secret
    payload = {"model": MODEL, "input": [PRIVATE], "encoding_format": "float"}
    body = json.loads(
        RequestCipher(secret.key, secret.id).encrypt_request(json.dumps(payload).encode())
    )
    # Flip one hex digit of the ciphertext of `input`.
    last = body["input"][-1]
    body["input"] = body["input"][:-1] + ("0" if last != "0" else "1")
    response = session_client.http.post("/v1/embeddings", content=json.dumps(body))
    assert_openai_error(response, 400, "authentication failed")

    # Two fields under two different (both known) secrets.
    other = make_client(backend)
    try:
        other_secret = other.exchange()
    finally:
        other.close()
    first = json.loads(
        RequestCipher(secret.key, secret.id).encrypt_request(json.dumps(payload).encode())
    )
    second = json.loads(
        RequestCipher(other_secret.key, other_secret.id).encrypt_request(
            json.dumps(payload).encode()
        )
    )
    mixed = {"model": MODEL, "input": first["input"], "encoding_format": second["encoding_format"]}
    response = session_client.http.post("/v1/embeddings", content=json.dumps(mixed))
    assert_openai_error(response, 400, "another secret ID")


def test_unknown_secret_answers_500_no_secret_for_id(session_client: ProtocolClient) -> None:
    cipher = RequestCipher(os.urandom(32), base64.b64encode(os.urandom(32)).decode())
    body = cipher.encrypt_request(json.dumps({"model": MODEL, "input": [PRIVATE]}).encode())
    response = session_client.http.post("/v1/embeddings", content=body)
    error = assert_openai_error(response, 500, "no secret for ID")
    assert error["param"] is None


@pytest.fixture(scope="module")
def small_limit_backend(
    local_workspace: Path, local_identity: LocalIdentity, engine: EmbeddingEngine
) -> Iterator[LocalBackend]:
    limits = BackendLimits(max_body_bytes=4096)
    with LocalBackend(
        local_workspace, identity=local_identity, engine=engine, limits=limits
    ) as running:
        yield running


def test_body_over_limit_is_413(small_limit_backend: LocalBackend) -> None:
    client = make_client(small_limit_backend)
    try:
        small = client.embeddings({"model": MODEL, "input": ["fits"]})
        assert len(small["data"]) == 1
        response, _ = client.post_encrypted({"model": MODEL, "input": [PRIVATE * 200]})
        assert_openai_error(response, 413, "limit of 4096 bytes")

        # Without Content-Length (chunked), the limit holds while reading.
        def chunks() -> Iterator[bytes]:
            yield b'{"model": "all-minilm-l6-v2", "input": "'
            for _ in range(10):
                yield b"a" * 1000
            yield b'"}'

        response = client.http.post("/v1/embeddings", content=chunks())
        assert "content-length" not in response.request.headers
        assert_openai_error(response, 413, "limit of 4096 bytes")
        # And the server goes on serving.
        assert client.embeddings({"model": MODEL, "input": "after"})["data"]
    finally:
        client.close()


# --- secret lifetime -------------------------------------------------------------------------


def test_expired_secret_answers_no_secret_for_id(
    local_workspace: Path, local_identity: LocalIdentity, engine: EmbeddingEngine
) -> None:
    clock = ManualClock()
    with LocalBackend(
        local_workspace,
        identity=local_identity,
        engine=engine,
        secret_ttl=timedelta(hours=1),
        clock=clock,
    ) as running:
        client = make_client(running)
        try:
            client.exchange()
            assert client.embeddings({"model": MODEL, "input": "before expiry"})["data"]
            clock.now += 3599
            assert client.embeddings({"model": MODEL, "input": "just before"})["data"]
            clock.now += 1
            response, _ = client.post_encrypted({"model": MODEL, "input": [PRIVATE]})
            assert_openai_error(response, 500, "no secret for ID")
            # A new exchange heals it, as a client's retry does.
            client.exchange()
            assert client.embeddings({"model": MODEL, "input": "after re-exchange"})["data"]
        finally:
            client.close()


def test_restart_forgets_secrets_and_keeps_url(
    local_workspace: Path, local_identity: LocalIdentity, engine: EmbeddingEngine
) -> None:
    running = LocalBackend(local_workspace, identity=local_identity, engine=engine)
    running.start()
    try:
        url = running.url
        client = make_client(running)
        client.exchange()
        assert client.embeddings({"model": MODEL, "input": "one"})["data"]
        running.stop()
        running.start()
        assert running.url == url
        response, _ = client.post_encrypted({"model": MODEL, "input": ["two"]})
        assert_openai_error(response, 500, "no secret for ID")
        client.exchange()
        assert client.embeddings({"model": MODEL, "input": "three"})["data"]
        client.close()
    finally:
        running.stop()


# --- concurrency -----------------------------------------------------------------------------


def test_concurrent_clients_all_answered_correctly(
    backend: LocalBackend, reference: list[ReferenceItem]
) -> None:
    items = usable(reference)
    long257 = over_limit(reference, 257).text
    clients = [make_client(backend) for _ in range(5)]
    for client in clients:
        client.exchange()
    before = backend.request_log["/v1/embeddings"]

    def job(n: int) -> str:
        client = clients[n % len(clients)]
        if n % 7 == 3:  # bad requests mixed in must not disturb the others
            response, _ = client.post_encrypted({"model": MODEL, "input": ["ok", long257]})
            assert response.status_code == 400
            assert response.json()["error"]["input_index"] == 1
            return "refused"
        start = (n * 5) % (len(items) - 4)
        chosen = items[start : start + 1 + n % 4]  # 1 to 4 inputs, different per request
        fmt = "base64" if n % 2 else "float"
        result = client.embeddings(
            {"model": MODEL, "input": [i.text for i in chosen], "encoding_format": fmt}
        )
        for item, data in zip(chosen, result["data"], strict=True):
            if fmt == "base64":
                vector = np.frombuffer(base64.b64decode(data["embedding"]), dtype="<f4")
            else:
                vector = np.asarray(data["embedding"])
            assert cosine_distance(vector, item.embedding) < 1e-5
        assert result["usage"]["prompt_tokens"] == sum(i.tokens for i in chosen)
        return "ok"

    try:
        with ThreadPoolExecutor(max_workers=10) as pool:
            outcomes = list(pool.map(job, range(30)))
    finally:
        for client in clients:
            client.close()
    assert outcomes.count("refused") == sum(1 for n in range(30) if n % 7 == 3)
    assert outcomes.count("ok") == 30 - outcomes.count("refused")
    assert backend.request_log["/v1/embeddings"] - before == 30


# --- API key, models, health, request log ----------------------------------------------------

API_KEY = "local-test-key-5b9e2d"


@pytest.fixture(scope="module")
def keyed_backend(
    local_workspace: Path, local_identity: LocalIdentity, engine: EmbeddingEngine
) -> Iterator[LocalBackend]:
    with LocalBackend(
        local_workspace, identity=local_identity, engine=engine, api_key=API_KEY
    ) as running:
        yield running


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/privatemode/v1/attest"),
        ("POST", "/privatemode/v1/secret"),
        ("POST", "/v1/embeddings"),
        ("GET", "/v1/models"),
    ],
)
def test_wrong_or_missing_api_key_is_401(
    keyed_backend: LocalBackend, method: str, path: str
) -> None:
    url = keyed_backend.url + path
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": API_KEY}):
        response = httpx.request(method, url, headers=headers, json={})
        error = assert_openai_error(response, 401, "API key")
        assert error["code"] == "invalid_api_key"
        assert API_KEY not in response.text and "wrong-key" not in response.text


def test_right_api_key_works_end_to_end(keyed_backend: LocalBackend) -> None:
    client = make_client(keyed_backend, api_key=API_KEY)
    try:
        client.exchange()
        assert client.embeddings({"model": MODEL, "input": "with a key"})["data"]
        assert client.http.get("/v1/models").status_code == 200
    finally:
        client.close()
    assert httpx.get(keyed_backend.url + "/healthz").status_code == 200  # health needs no key


def test_models_and_health(backend: LocalBackend) -> None:
    response = httpx.get(backend.url + "/v1/models")
    assert response.status_code == 200
    assert response.headers["Privatemode-Encrypted"] == "false"
    body = response.json()
    assert body["object"] == "list"
    (model,) = body["data"]
    assert model["id"] == MODEL and model["object"] == "model" and model["tasks"] == ["embed"]
    assert isinstance(model["created"], int) and model["owned_by"]
    one = httpx.get(f"{backend.url}/v1/models/{MODEL}")
    assert one.status_code == 200 and one.json()["id"] == MODEL
    assert_openai_error(httpx.get(f"{backend.url}/v1/models/nope"), 404, "'nope' does not exist")
    health = httpx.get(backend.url + "/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_unknown_route_and_method_are_openai_errors(backend: LocalBackend) -> None:
    assert_openai_error(httpx.get(backend.url + "/v1/chat"), 404, "/v1/chat")
    assert_openai_error(httpx.get(backend.url + "/v1/embeddings"), 405, "GET")


def test_request_log_counts_per_path(
    local_workspace: Path, local_identity: LocalIdentity, engine: EmbeddingEngine
) -> None:
    with LocalBackend(local_workspace, identity=local_identity, engine=engine) as running:
        client = make_client(running)
        try:
            client.attest()
            assert running.request_log["/privatemode/v1/attest"] == 1
            assert running.request_log["/v1/embeddings"] == 0
            client.exchange()
            client.embeddings({"model": MODEL, "input": "counted"})
        finally:
            client.close()
        assert running.request_log.snapshot() == {
            "/privatemode/v1/attest": 1,
            "/privatemode/v1/secret": 1,
            "/v1/embeddings": 1,
        }


# --- the CLI entry point --------------------------------------------------------------------


def test_run_local_backend_prints_and_serves_until_interrupted(
    local_workspace: Path, local_identity: LocalIdentity
) -> None:
    code = (
        "import sys\n"
        "from privatemode_proxy.local import run_local_backend\n"
        "run_local_backend('127.0.0.1', 0, sys.argv[1], log_level='warning')\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(local_workspace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(4)]
        url = lines[0].rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:"), lines
        assert str(local_workspace / "root.pem") in lines[1]
        assert str(local_workspace / "manifest.json") in lines[2]
        health = httpx.get(url + "/healthz", timeout=30)
        assert health.status_code == 200
        client = ProtocolClient(
            url,
            root_pem_path=local_workspace / "root.pem",
            manifest_path=local_workspace / "manifest.json",
        )
        try:
            assert client.embeddings({"model": MODEL, "input": "from the CLI"})["data"]
        finally:
            client.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
