"""Helpers for the reliability suite: a proxy in front of a relay, reference vectors, checks.

The field-cipher oracle below is an independent implementation of protocol §3 (AES-256-GCM,
`nonce || uint32_le(seq)` as additional data, sorted top-level fields) written from the protocol
notes. Tests use it to play a backend that knows the secret but answers wrongly (drops,
duplicates or reorders vectors, or uses another nonce), which only a key holder can do.
"""

from __future__ import annotations

import base64
import os
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from privatemode_proxy import BatchLimits, ProxyConfig, SessionConfig, create_proxy_app
from privatemode_proxy._serving import ServerThread
from privatemode_proxy._session import pinned_manifest
from privatemode_proxy.attestation import load_trusted_root

MODEL = "all-minilm-l6-v2"
EMBEDDINGS = "/v1/embeddings"
ATTEST = "/privatemode/v1/attest"
SECRET = "/privatemode/v1/secret"

RESPONSE_PLAIN = frozenset({"id", "usage"})

#: Distinct texts (no two alike, so a misplaced vector is always detectable).
TEXTS = [
    "Confidential computing keeps data encrypted while it is processed.",
    "The quarterly report is due on Friday afternoon.",
    "Ein Satz auf Deutsch, mit Umlauten: äöü ß.",
    "東京は日本の首都です。",
    "short",
    "A longer text about retrieval-augmented generation and vector search. " * 3,
    "emoji 🙂 and symbols ∑ ∫ √",
    "The cat sat on the mat.",
    "Vectors are compared with cosine similarity.",
    "Rain is forecast for the whole weekend in Hamburg.",
    "SELECT name FROM users WHERE id = 42;",
    "",
]


# -- proxy -----------------------------------------------------------------------------------


def start_proxy(
    backend: Any,
    *,
    api_url: str,
    limits: BatchLimits | None = None,
    manifest: bytes | None = None,
    api_key: str | None = None,
    session_options: Mapping[str, Any] | None = None,
    log_level: str = "warning",
) -> ServerThread:
    """A real proxy (FastAPI app on uvicorn) that trusts `backend`'s root and pins its manifest,
    talking to `api_url` (usually a relay in front of the backend)."""
    options: dict[str, Any] = {
        "exchange_retry_delay_seconds": 0.05,
        "reset_retry_delay_seconds": 0.05,
        "timeout_seconds": 30.0,
        "connect_timeout_seconds": 5.0,
    }
    options.update(session_options or {})
    session = SessionConfig(
        api_url=api_url,
        trusted_roots=tuple(load_trusted_root(Path(backend.root_pem_path))),
        manifest=pinned_manifest(
            manifest if manifest is not None else Path(backend.manifest_path).read_bytes()
        ),
        api_key=api_key,
        **options,
    )
    config = ProxyConfig(
        session=session,
        limits=limits or BatchLimits(),
        local_mode=True,
        token_counters={backend.model_id: backend.engine.count_tokens},
    )
    server = ServerThread(create_proxy_app(config), log_level=log_level)
    server.start()
    return server


def proxy_session(server: ServerThread) -> Any:
    """The proxy's `UpstreamSession` (for reading its state in checks, never for driving it)."""
    return server._server.config.app.state.session


def wait_upstream(proxy_url: str, *, timeout: float = 60.0) -> dict[str, Any]:
    """Poll /healthz until the upstream is 'ready' or 'failed'; return the last body."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = httpx.get(proxy_url + "/healthz", timeout=10).json()
        if body["upstream"] in ("ready", "failed"):
            return body
        time.sleep(0.02)
    raise TimeoutError(f"proxy upstream still {body}")


def embed(
    proxy_url: str, texts: Sequence[str] | str, *, timeout: float = 60.0, **fields: Any
) -> httpx.Response:
    body = {"model": MODEL, "input": texts if isinstance(texts, str) else list(texts), **fields}
    return httpx.post(proxy_url + EMBEDDINGS, json=body, timeout=timeout)


# -- vectors -----------------------------------------------------------------------------------


class Reference:
    """Each text embedded on its own, directly by the engine (no proxy, no backend, no HTTP)."""

    def __init__(self, engine: Any, texts: Iterable[str]) -> None:
        self.texts = list(dict.fromkeys(texts))
        self.vectors = np.stack([engine.embed([t])[0] for t in self.texts]).astype(np.float32)
        self._row = {t: i for i, t in enumerate(self.texts)}

    def rows(self, texts: Sequence[str]) -> np.ndarray:
        return self.vectors[[self._row[t] for t in texts]]

    def check(self, texts: Sequence[str], vectors: np.ndarray, *, atol: float = 1e-5) -> None:
        """Every vector is its own text's reference vector, in order: none wrong, missing,
        duplicated or swapped."""
        assert vectors.shape == (len(texts), self.vectors.shape[1]), vectors.shape
        expected = self.rows(texts)
        worst = float(np.max(np.abs(vectors - expected))) if len(texts) else 0.0
        assert worst <= atol, f"vector differs from the direct reference by {worst}"
        # The nearest reference of each returned vector is its own text's.
        nearest = np.argmax(vectors @ self.vectors.T, axis=1)
        assert [self.texts[i] for i in nearest] == list(texts), "a vector is misplaced"


def vectors_of(response: httpx.Response) -> np.ndarray:
    """The vectors of a successful proxy answer, after checking its OpenAI shape and order."""
    assert response.status_code == 200, response.text
    body = response.json()
    data = body["data"]
    assert [d["index"] for d in data] == list(range(len(data))), "indices not 0..n-1 in order"
    rows = []
    for item in data:
        assert item["object"] == "embedding"
        emb = item["embedding"]
        if isinstance(emb, str):
            rows.append(np.frombuffer(base64.b64decode(emb), dtype="<f4"))
        else:
            rows.append(np.asarray(emb, dtype=np.float32))
    return np.stack(rows) if rows else np.zeros((0, 0), np.float32)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The OpenAI-shaped error of a failed answer (and a check that there is no `data`)."""
    body = response.json()
    assert "data" not in body, "an error answer carried vectors"
    error = body["error"]
    # `input_index` only on errors about one input: its index within the request
    assert set(error) - {"input_index"} == {"message", "type", "param", "code"}, error
    index = error.get("input_index")
    assert index is None or (isinstance(index, int) and index >= 0), error
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


# -- the field-cipher oracle (independent implementation of protocol §3) ------------------------


def _aad(nonce: bytes, sequence: int) -> bytes:
    return nonce + struct.pack("<I", sequence)


def _gjson_key(key: str) -> bytes:
    return key.replace(".", "\\.").replace("?", "\\?").replace("*", "\\*").encode()


def encrypted_keys(obj: Mapping[str, Any], plain: frozenset[str] = RESPONSE_PLAIN) -> list[str]:
    return sorted((k for k in obj if k not in plain), key=_gjson_key)


def open_response(body: bytes, key: bytes, nonce: bytes) -> dict[str, Any]:
    """Decrypt a response's fields (raises on any authentication failure)."""
    obj = orjson.loads(body)
    aead = AESGCM(key)
    for seq, name in enumerate(encrypted_keys(obj)):
        _sid, _nonce, iv, ct = obj[name].split(":")
        obj[name] = orjson.loads(
            aead.decrypt(bytes.fromhex(iv), bytes.fromhex(ct), _aad(nonce, seq))
        )
    return dict(obj)


def seal_response(
    obj: Mapping[str, Any],
    key: bytes,
    secret_id: str,
    nonce: bytes,
    *,
    token_nonce: bytes | None = None,
    sequence: Callable[[int], int] = lambda seq: seq,
) -> bytes:
    """Encrypt a response's fields as a backend does; `token_nonce` and `sequence` let a test
    write a nonce into the field other than the one in the additional data, or misnumber."""
    aead = AESGCM(key)
    out = dict(obj)
    for seq, name in enumerate(encrypted_keys(obj)):
        iv = os.urandom(12)
        ct = aead.encrypt(iv, orjson.dumps(obj[name]), _aad(nonce, sequence(seq)))
        shown = token_nonce if token_nonce is not None else nonce
        out[name] = f"{secret_id}:{shown.hex()}:{iv.hex()}:{ct.hex()}"
    return orjson.dumps(out)


def float_rows(data: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
    rows = []
    for item in data:
        emb = item["embedding"]
        if isinstance(emb, str):
            rows.append(np.frombuffer(base64.b64decode(emb), dtype="<f4"))
        else:
            rows.append(np.asarray(emb, dtype=np.float32))
    return rows


# -- scanning for secrets ------------------------------------------------------------------------


def secret_forms(secret: bytes | str) -> list[str]:
    """The ways a secret could be written into text: raw, hex, base64 (std/url), repr."""
    if isinstance(secret, str):
        return [secret]
    forms = {
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode(),
        base64.b64encode(secret).decode().rstrip("="),
        repr(secret)[2:-1],
        secret.decode("latin-1"),
    }
    # Half the key is already a leak; look for 16-byte windows of the hex form too.
    hexed = secret.hex()
    forms.update(hexed[i : i + 32] for i in range(0, len(hexed) - 31, 16))
    return [f for f in forms if len(f) >= 16]


def find_leaks(haystacks: Mapping[str, str], secrets: Mapping[str, bytes | str]) -> list[str]:
    """'<secret name> in <where>' for every secret form found in any haystack."""
    found = []
    for where, text in haystacks.items():
        for name, secret in secrets.items():
            for form in secret_forms(secret):
                if form in text:
                    found.append(f"{name} in {where}")
                    break
    return found
