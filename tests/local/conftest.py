"""Shared fixtures of the local backend tests: one identity, engine and backend per session.

Making the identity (RSA-4096 keys for the local AMD-like chain) and loading the model are slow,
so they happen once; tests that need a differently configured backend start one more
`LocalBackend` on the same identity and engine, which is quick.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from localbackend_helpers import FIXTURES, ProtocolClient, ReferenceItem
from privatemode_proxy.local import LocalBackend
from privatemode_proxy.local._engine import EmbeddingEngine, load_default_engine
from privatemode_proxy.local._issuer import LocalIdentity


@pytest.fixture(scope="session")
def reference() -> list[ReferenceItem]:
    """sentence-transformers' all-MiniLM-L6-v2 vectors, written by the engine's author."""
    data = json.loads((FIXTURES / "minilm_reference.json").read_text(encoding="utf-8"))
    return [
        ReferenceItem(it["text"], it["tokens"], np.asarray(it["embedding"], dtype=np.float64))
        for it in data["items"]
    ]


@pytest.fixture(scope="session")
def local_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-backend")


@pytest.fixture(scope="session")
def local_identity(local_workspace: Path) -> LocalIdentity:
    return LocalIdentity.load_or_create(local_workspace)


@pytest.fixture(scope="session")
def engine() -> EmbeddingEngine:
    return load_default_engine()


@pytest.fixture(scope="session")
def backend(
    local_workspace: Path, local_identity: LocalIdentity, engine: EmbeddingEngine
) -> Iterator[LocalBackend]:
    with LocalBackend(local_workspace, identity=local_identity, engine=engine) as running:
        yield running


@pytest.fixture(scope="session")
def session_client(backend: LocalBackend) -> Iterator[ProtocolClient]:
    """One attested client with a secret, shared by tests that only need to send requests."""
    client = ProtocolClient(
        backend.url, root_pem_path=backend.root_pem_path, manifest_path=backend.manifest_path
    )
    client.exchange()
    yield client
    client.close()
