"""Helpers of the local backend tests: a protocol client built from the protocol core, the
reference vectors' record type, and a hand-moved clock.

`ProtocolClient` attests the backend with the real verifier (local root trusted, manifest
pinned), exchanges a secret and encrypts requests field by field, over real HTTP.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from privatemode_proxy.attestation import AttestationResult, load_trusted_root, verify_attestation
from privatemode_proxy.local import LocalBackend
from privatemode_proxy.protocol import ClientSecretExchange, RequestCipher, Secret

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MODEL = "all-minilm-l6-v2"


@dataclass(frozen=True)
class ReferenceItem:
    text: str
    tokens: int
    embedding: np.ndarray


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


class ProtocolClient:
    """The client side of the Privatemode protocol, from the protocol core, over httpx."""

    def __init__(
        self,
        base_url: str,
        *,
        root_pem_path: Path,
        manifest_path: Path,
        api_key: str | None = None,
    ) -> None:
        headers = {"Privatemode-Version": "test"}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key}"
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=120.0)
        self.trusted_roots = load_trusted_root(root_pem_path)
        self.manifest = manifest_path.read_bytes()
        self.attestation: AttestationResult | None = None
        self.secret: Secret | None = None

    def close(self) -> None:
        self.http.close()

    def attest(self) -> AttestationResult:
        nonce = os.urandom(32)
        response = self.http.post("/privatemode/v1/attest", json={"Nonce": _b64(nonce)})
        assert response.status_code == 200, response.text
        document = _unb64(response.json()["AttestationDoc"])
        self.attestation = verify_attestation(
            nonce,
            document,
            expected_manifest=self.manifest,
            trusted_roots=self.trusted_roots,
        )
        return self.attestation

    def exchange(self) -> Secret:
        if self.attestation is None:
            self.attest()
        assert self.attestation is not None
        exchange = ClientSecretExchange()
        response = self.http.post(
            "/privatemode/v1/secret",
            content=exchange.request_body(),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        self.secret = exchange.complete(response.content, self.attestation.mesh_ca)
        return self.secret

    def post_encrypted(
        self, payload: Mapping[str, Any], *, secret: Secret | None = None
    ) -> tuple[httpx.Response, RequestCipher]:
        """POST `payload` with every field but `model` encrypted; the raw response."""
        secret = secret or self.secret or self.exchange()
        cipher = RequestCipher(secret.key, secret.id)
        body = cipher.encrypt_request(json.dumps(payload).encode("utf-8"))
        response = self.http.post(
            "/v1/embeddings",
            content=body,
            headers={
                "Content-Type": "application/json",
                "Privatemode-Secret-ID": secret.id,
                "Privatemode-Target-Model": str(payload.get("model", "")),
            },
        )
        return response, cipher

    def embeddings(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """A successful embeddings call, decrypted."""
        response, cipher = self.post_encrypted(payload)
        assert response.status_code == 200, response.text
        decrypted: dict[str, Any] = json.loads(cipher.decrypt_response(response.content))
        return decrypted


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def make_client(backend: LocalBackend, *, api_key: str | None = None) -> ProtocolClient:
    return ProtocolClient(
        backend.url,
        root_pem_path=backend.root_pem_path,
        manifest_path=backend.manifest_path,
        api_key=api_key,
    )


class ManualClock:
    """A clock the test moves by hand (time injection for the secret TTL, not a fake part)."""

    def __init__(self, start: float = 50_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now
