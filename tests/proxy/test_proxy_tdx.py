"""The proxy against a local backend issuing Intel TDX evidence, through real sockets.

The backend plays Intel and the TDX module with its own Intel-like test root (trusted here only
because the test says so, as local mode does). A correct quote is accepted and the status page
names the TEE and shows its measurements; a quote that does not match the manifest's TDX
reference values, a tampered quote, an untrusted root and a pinned manifest that differs from
the attested one are all refused with 503 before any request reaches /v1/embeddings.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _proxyhelpers import MODEL, post_embeddings, start_proxy, wait_upstream
from privatemode_proxy import LocalStack
from privatemode_proxy._serving import free_port
from privatemode_proxy.attestation import TdxQuote
from privatemode_proxy.local import LocalBackend
from privatemode_proxy.local._issuer import LocalIdentity
from test_proxy_cli import _cli, _Process, _wait_ready

TEXTS = ["TDX quotes are signed by an attestation key the QE vouches for.", "zweiter Text"]


class WrongMeasurementIdentity(LocalIdentity):
    """Correctly signed quotes of a TD whose MRTD is not the manifest's (a stand-in for a
    deployment that runs other code than its manifest says)."""

    def tdx_quote(self, nonce: bytes) -> TdxQuote:
        assert self.tdx is not None
        genuine = super().tdx_quote(nonce)
        return self.tdx.quote(
            measurement=bytes(48),
            mr_config_id=genuine.mr_config_id,
            report_data=genuine.report_data,
        )


class TamperedQuoteIdentity(LocalIdentity):
    """Quotes with one byte of REPORTDATA changed after signing (a stand-in for tampering)."""

    def tdx_quote(self, nonce: bytes) -> TdxQuote:
        quote = super().tdx_quote(nonce)
        data = bytearray(quote.report_data)
        data[0] ^= 1
        return quote.replace(report_data=bytes(data))


def _backend(
    local_stack: LocalStack, workspace: Path, identity_class: type[LocalIdentity]
) -> LocalBackend:
    identity = identity_class.load_or_create(workspace, tee="tdx")
    backend = LocalBackend(workspace, engine=local_stack.backend.engine, identity=identity)
    backend.start()
    return backend


@pytest.fixture()
def tdx_backend(local_stack: LocalStack, tmp_path: Path) -> Iterator[LocalBackend]:
    backend = _backend(local_stack, tmp_path / "tdx-backend", LocalIdentity)
    yield backend
    backend.stop()


def _session_options(backend: LocalBackend) -> dict[str, Any]:
    return backend.identity.tdx_session_options()


def _refused_with_503(backend: LocalBackend, **start: Any) -> dict[str, Any]:
    """Start a proxy on `backend` (`start`: `start_proxy`'s options) and expect attestation to
    fail: upstream "failed", an embeddings request answered 503 ``attestation_failed``, and
    nothing sent to /v1/embeddings or /privatemode/v1/secret. The OpenAI-shaped error."""
    proxy = start_proxy(backend, **start)
    try:
        assert wait_upstream(proxy.url)["upstream"] == "failed"
        resp = post_embeddings(proxy.url, {"model": MODEL, "input": TEXTS})
        assert resp.status_code == 503
        error: dict[str, Any] = resp.json()["error"]
        assert error["code"] == "attestation_failed"
    finally:
        proxy.stop()
    assert backend.request_log.count("/v1/embeddings") == 0
    assert backend.request_log.count("/privatemode/v1/secret") == 0
    return error


def test_proxy_accepts_local_tdx_evidence_and_shows_the_tee(tdx_backend: LocalBackend) -> None:
    proxy = start_proxy(tdx_backend, session_options=_session_options(tdx_backend))
    try:
        assert wait_upstream(proxy.url)["upstream"] == "ready"
        resp = post_embeddings(proxy.url, {"model": MODEL, "input": TEXTS})
        assert resp.status_code == 200, resp.text
        assert len(resp.json()["data"]) == 2
        status = httpx.get(proxy.url + "/", params={"format": "json"}).json()
        att = status["attestation"]
        assert att["tee"] == "Intel TDX"
        assert att["reference_value"] == "tdx[0]"
        identity = tdx_backend.identity
        assert att["measurement"] == identity.measurement.hex()
        assert att["measurements"]["MRTD"] == identity.measurement.hex()
        assert att["measurements"]["MRCONFIGID"].startswith(identity.host_data.hex())
        assert set(att["measurements"]) >= {"RTMR0", "RTMR1", "RTMR2", "RTMR3", "MRSEAM"}
        page = httpx.get(proxy.url + "/", headers={"Accept": "text/html"}).text
        assert "Intel TDX" in page and identity.measurement.hex() in page
    finally:
        proxy.stop()
    assert tdx_backend.request_log.count("/v1/embeddings") >= 1
    # The manifest lists both TEEs; the TDX entry matched (Contrast's "any").
    manifest = json.loads(Path(tdx_backend.manifest_path).read_bytes())
    assert manifest["ReferenceValues"]["snp"] and manifest["ReferenceValues"]["tdx"]


@pytest.mark.parametrize(
    ("identity_class", "check"),
    [(WrongMeasurementIdentity, "MR_TD"), (TamperedQuoteIdentity, "QUOTE_SIGNATURE")],
)
def test_tdx_evidence_that_does_not_match_is_refused_with_503(
    local_stack: LocalStack, tmp_path: Path, identity_class: type[LocalIdentity], check: str
) -> None:
    backend = _backend(local_stack, tmp_path / "bad", identity_class)
    try:
        error = _refused_with_503(backend, session_options=_session_options(backend))
    finally:
        backend.stop()
    assert f"tdx[0]: {check}" in error["message"]


def test_tdx_manifest_mismatch_is_refused_with_503(tdx_backend: LocalBackend) -> None:
    manifest = json.loads(Path(tdx_backend.manifest_path).read_bytes())
    manifest["ReferenceValues"]["tdx"][0]["MrTd"] = "00" * 48
    wrong = json.dumps(manifest).encode()
    options = _session_options(tdx_backend)
    error = _refused_with_503(tdx_backend, manifest=wrong, session_options=options)
    assert "EXPECTED_MANIFEST" in error["message"]


def test_tdx_evidence_without_the_local_root_is_refused(tdx_backend: LocalBackend) -> None:
    # Intel's real root only (the default): the local Intel-like chain is not accepted.
    error = _refused_with_503(tdx_backend, session_options={"tdx_collateral": tdx_backend.identity})
    assert "certificate signed by unknown authority" in error["message"]


def test_tee_flag_needs_local() -> None:
    out = subprocess.run(
        [*_cli(), "--tee", "tdx"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 2
    assert "--tee" in out.stderr and "--local" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_local_mode_with_tdx_evidence(tmp_path: Path) -> None:
    port = free_port()
    proxy = _Process(
        ["--local", "--tee", "tdx", "--port", str(port), "--workspace", str(tmp_path / "ws")],
        tmp_path / "proxy.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proxy)
        resp = post_embeddings(url, {"model": MODEL, "input": TEXTS})
        assert resp.status_code == 200, resp.text
        status = httpx.get(url + "/", params={"format": "json"}).json()
        assert status["attestation"]["tee"] == "Intel TDX"
    finally:
        proxy.stop()
    assert (tmp_path / "ws" / "local-backend" / "tdx_root.pem").is_file()
