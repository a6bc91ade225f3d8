"""Fixtures for the attestation tests: the public SNP vectors and one local identity.

The local identity (RSA-4096 ARK and ASK) is made once per test session and shared: its keys
are only read by the tests, and each test that needs different evidence builds it from them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from attestation_support import IdentityKeys
from privatemode_proxy.local._issuer import IDENTITY_DIRNAME, LocalIdentity


@pytest.fixture(scope="session")
def snp_dir(vectors_dir: Path) -> Path:
    return vectors_dir / "snp"


@pytest.fixture(scope="session")
def expected(snp_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((snp_dir / "expected.json").read_text())
    return data


@pytest.fixture(scope="session")
def synthetic(snp_dir: Path) -> dict[str, Any]:
    contrast = snp_dir / "contrast"
    return {
        "response": (contrast / "synthetic_attestation_response.json").read_bytes(),
        "wrapped": (contrast / "synthetic_privatemode_attest_response.json").read_bytes(),
        "manifest": (contrast / "synthetic_manifest.json").read_bytes(),
        "expected": json.loads((contrast / "synthetic_expected.json").read_text()),
    }


@pytest.fixture(scope="session")
def identity_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-identity")


@pytest.fixture(scope="session")
def identity(identity_workspace: Path) -> LocalIdentity:
    """The local backend identity, made once per session (RSA-4096 key generation)."""
    return LocalIdentity.load_or_create(identity_workspace)


@pytest.fixture(scope="session")
def identity_keys(identity: LocalIdentity) -> IdentityKeys:
    return IdentityKeys(identity.workspace / IDENTITY_DIRNAME)
