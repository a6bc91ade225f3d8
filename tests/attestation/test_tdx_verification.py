"""`verify_attestation` with Intel TDX evidence: the Contrast layer around the TDX validator.

Evidence from the local backend's Intel-like identity (test keys; trusted here by passing its
root): it passes, and every Contrast-level refusal is made to happen (coordinator policy hash in
MRCONFIGID, PIIDs, report data, TD attributes, TCB evaluation number, missing or unreachable
collateral, an untrusted root); SNP-or-TDX "any"; the Intel PCS cache against a fake PCS serving
the synthetic vector collateral; Hypothesis through the whole verifier.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote as url_quote

import httpx
import pytest
from attestation_support import NONCE, rebuild_response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from privatemode_proxy.attestation import (
    AttestationError,
    CertificateFetchError,
    CertificateUnavailableError,
    CollateralUnavailableError,
    PcsCollateralCache,
    StaticTdxCollateral,
    TdxCollateral,
    TdxQuote,
    verify_attestation,
)
from privatemode_proxy.attestation._tdx import pck_chain_certificates, pck_extensions
from privatemode_proxy.attestation._x509 import load_certificate
from privatemode_proxy.local._issuer import LocalIdentity
from test_tdx_vectors import TDX


@pytest.fixture(scope="module")
def tdx_identity(tmp_path_factory: pytest.TempPathFactory) -> LocalIdentity:
    return LocalIdentity.load_or_create(tmp_path_factory.mktemp("tdx-identity"), tee="tdx")


def _verify(identity: LocalIdentity, document: bytes, **options: Any) -> Any:
    options.setdefault("expected_manifest", identity.manifest_bytes)
    options.setdefault("trusted_roots", [identity.trusted_root()])
    options.setdefault("tdx_roots", [identity.tdx_trusted_root()])
    options.setdefault("tdx_collateral", identity)
    return verify_attestation(NONCE, document, **options)


def _refused(identity: LocalIdentity, document: bytes, **options: Any) -> AttestationError:
    with pytest.raises(AttestationError) as info:
        _verify(identity, document, **options)
    return info.value


def _with_quote(identity: LocalIdentity, quote: TdxQuote) -> bytes:
    return rebuild_response(identity.attestation_doc(NONCE), raw_attestation_doc=quote.to_proto())


def _quote(identity: LocalIdentity, **changes: Any) -> TdxQuote:
    """A correctly signed local quote with some TD fields changed (the rest as genuine)."""
    assert identity.tdx is not None
    genuine = identity.tdx_quote(NONCE)
    values = {
        "measurement": genuine.mr_td,
        "mr_config_id": genuine.mr_config_id,
        "report_data": genuine.report_data,
    }
    values.update(changes)
    return identity.tdx.quote(**values)


def test_local_tdx_evidence_passes(tdx_identity: LocalIdentity) -> None:
    result = _verify(tdx_identity, tdx_identity.attestation_doc(NONCE))
    assert result.tee == "Intel TDX"
    assert result.reference_value == "tdx[0]"
    assert result.measurement == tdx_identity.measurement.hex()
    assert result.measurements["MRCONFIGID"][:64] == tdx_identity.host_data.hex()
    assert result.summary()["tee"] == "Intel TDX"


def test_snp_or_tdx_any(tdx_identity: LocalIdentity) -> None:
    # The local TDX manifest lists an SNP entry first; the TDX one matches.
    document = tdx_identity.attestation_doc(NONCE)
    assert _verify(tdx_identity, document).reference_value == "tdx[0]"
    # When nothing matches, both TEEs' failures are named.
    error = _refused(tdx_identity, document, tdx_roots=[])
    assert error.checks_for("snp[0] (Genoa)") == {"EVIDENCE"}
    assert error.checks_for("tdx[0]") == {"PCK_CHAIN"}


def test_evidence_for_another_nonce(tdx_identity: LocalIdentity) -> None:
    error = _refused(tdx_identity, tdx_identity.attestation_doc(bytes(32)))
    assert error.checks_for("tdx[0]") == {"REPORT_DATA"}
    assert "quote field REPORT_DATA is" in str(error)


def test_coordinator_policy_hash_is_mrconfigid(tdx_identity: LocalIdentity) -> None:
    quote = _quote(
        tdx_identity, mr_config_id=hashlib.sha256(b"not the coordinator").digest() + bytes(16)
    )
    error = _refused(tdx_identity, _with_quote(tdx_identity, quote))
    assert error.checks == {"MRCONFIGID"}
    assert "wrong policy hash for Coordinator" in str(error)


def test_mrtd_and_td_attributes_are_checked(tdx_identity: LocalIdentity) -> None:
    error = _refused(
        tdx_identity, _with_quote(tdx_identity, _quote(tdx_identity, measurement=bytes(48)))
    )
    # The local RTMRs are derived from the measurement too.
    assert error.checks_for("tdx[0]") == {"MR_TD", "RTMR0", "RTMR1", "RTMR2"}
    assert tdx_identity.tdx is not None
    genuine = tdx_identity.tdx_quote(NONCE)
    debug = genuine.replace(td_attributes=((1 << 28) | 1).to_bytes(8, "little"))
    error = _refused(tdx_identity, _with_quote(tdx_identity, debug))
    assert error.checks_for("tdx[0]") == {"QUOTE_SIGNATURE"}  # changed after signing


def _manifest_with(identity: LocalIdentity, **tdx_changes: Any) -> bytes:
    (rv,) = identity.manifest.tdx
    return replace(identity.manifest, tdx=(replace(rv, **tdx_changes),)).to_json()


def test_allowed_piids(tdx_identity: LocalIdentity) -> None:
    manifest = _manifest_with(tdx_identity, allowed_piids=("00" * 16,))
    document = rebuild_response(tdx_identity.attestation_doc(NONCE), manifests=(manifest,))
    error = _refused(tdx_identity, document, expected_manifest=manifest)
    assert "ALLOWED_PIIDS" in error.checks_for("tdx[0]")
    assert "not in allowed PIIDs" in str(error)


def test_min_tcb_evaluation_data_number(tdx_identity: LocalIdentity) -> None:
    manifest = _manifest_with(tdx_identity, min_tcb_evaluation_data_number=99)
    document = rebuild_response(tdx_identity.attestation_doc(NONCE), manifests=(manifest,))
    error = _refused(tdx_identity, document, expected_manifest=manifest)
    assert error.checks_for("tdx[0]") == {"COLLATERAL"}
    assert "outdated TcbEvaluationDataNumber (got 21, requested 99)" in str(error)


def test_tdx_fails_closed_without_collateral(tdx_identity: LocalIdentity) -> None:
    error = _refused(tdx_identity, tdx_identity.attestation_doc(NONCE), tdx_collateral=None)
    assert error.checks_for("tdx[0]") == {"COLLATERAL"}
    assert not isinstance(error, CollateralUnavailableError)


class _Failing:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def tdx_collateral(self, fmspc: bytes, ca: str, evaluation_data_number: int) -> TdxCollateral:
        raise self.error


def test_collateral_fetch_failure_is_transient(tdx_identity: LocalIdentity) -> None:
    document = tdx_identity.attestation_doc(NONCE)
    error = _refused(
        tdx_identity, document, tdx_collateral=_Failing(CertificateFetchError("HTTP 503"))
    )
    assert isinstance(error, CollateralUnavailableError)
    assert error.checks_for("tdx[0]") == {"COLLATERAL"}
    error = _refused(
        tdx_identity, document, tdx_collateral=_Failing(CertificateUnavailableError("HTTP 404"))
    )
    assert not isinstance(error, CollateralUnavailableError)


def test_only_the_embedded_intel_root_by_default(tdx_identity: LocalIdentity) -> None:
    # tdx_roots=None means Intel's root: the local Intel-like chain is refused.
    error = _refused(tdx_identity, tdx_identity.attestation_doc(NONCE), tdx_roots=None)
    assert "certificate signed by unknown authority" in str(error)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_any_tdx_document_gives_only_attestation_errors(data: bytes) -> None:
    identity = _shared_identity()
    document = rebuild_response(identity.attestation_doc(NONCE), raw_attestation_doc=data)
    with pytest.raises(AttestationError):
        _verify(identity, document)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_tdx_evidence_is_refused_or_equivalent(data: st.DataObject) -> None:
    identity = _shared_identity()
    raw = identity.tdx_quote(NONCE).to_proto()
    pos = data.draw(st.integers(0, len(raw) - 1))
    mutated = bytearray(raw)
    mutated[pos] ^= data.draw(st.integers(1, 255))
    document = rebuild_response(identity.attestation_doc(NONCE), raw_attestation_doc=bytes(mutated))
    try:
        _verify(identity, document)
    except AttestationError:
        return
    accepted = TdxQuote.from_proto(bytes(mutated))
    genuine = TdxQuote.from_proto(raw)
    assert pck_chain_certificates(accepted.pck_chain) == pck_chain_certificates(genuine.pck_chain)
    unsigned = {"extra_bytes": b"", "pck_chain": b"", "pck_chain_size": 0}
    assert replace(accepted, **unsigned) == replace(genuine, **unsigned)


_SHARED: list[LocalIdentity] = []


def _shared_identity() -> LocalIdentity:
    if not _SHARED:
        import tempfile

        _SHARED.append(LocalIdentity.load_or_create(Path(tempfile.mkdtemp()), tee="tdx"))
    return _SHARED[0]


# ---------------------------------------------------------------------------------------------
# The Intel PCS cache, against a fake PCS (Intel PCS is unreachable here)
# ---------------------------------------------------------------------------------------------


class FakePcs:
    """Serves the synthetic vector collateral at Intel PCS's URLs; counts requests."""

    def __init__(self, *, status: int = 200) -> None:
        s = TDX / "synthetic"
        self.status = status
        chain = (s / "tcb_signing_chain.pem").read_bytes().decode()
        self.routes: dict[str, tuple[bytes, dict[str, str]]] = {
            "/tdx/certification/v4/tcb": (
                (s / "tcbinfo_uptodate.json").read_bytes(),
                {"TCB-Info-Issuer-Chain": url_quote(chain, safe="")},
            ),
            "/tdx/certification/v4/qe/identity": (
                (s / "qe_identity.json").read_bytes(),
                {"SGX-Enclave-Identity-Issuer-Chain": url_quote(chain, safe="")},
            ),
            "/sgx/certification/v4/pckcrl": (
                (s / "pckcrl_platform.der").read_bytes(),
                {
                    "SGX-PCK-CRL-Issuer-Chain": url_quote(
                        (s / "pck_crl_issuer_chain.pem").read_text(), safe=""
                    )
                },
            ),
            "/tdx-test-root-ca.crl": ((s / "rootcrl.der").read_bytes(), {}),
        }
        self.requests: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(str(request.url))
        if self.status != 200:
            return httpx.Response(self.status)
        body, headers = self.routes[request.url.path]
        return httpx.Response(200, content=body, headers=headers)


def _synthetic_key() -> tuple[bytes, str]:
    quote = TdxQuote.from_proto((TDX / "synthetic" / "quote_v4_synthetic.binpb").read_bytes())
    pck = load_certificate(pck_chain_certificates(quote.pck_chain)[0])
    return pck_extensions(pck).fmspc, "platform"


def test_pcs_cache_fetches_caches_and_refreshes(tmp_path: Path) -> None:
    fake = FakePcs()
    now = [datetime(2026, 1, 15, tzinfo=UTC)]
    cache = PcsCollateralCache(
        tmp_path,
        client=httpx.Client(transport=httpx.MockTransport(fake.handler)),
        clock=lambda: now[0],
    )
    fmspc, ca = _synthetic_key()
    collateral = cache.tdx_collateral(fmspc, ca, 21)
    assert sorted(fake.requests) == sorted(
        [
            f"https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc={fmspc.hex()}"
            "&tcbEvaluationDataNumber=21",
            "https://api.trustedservices.intel.com/tdx/certification/v4/qe/identity",
            "https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=platform"
            "&encoding=der",
            "https://test.invalid/tdx-test-root-ca.crl",
        ]
    )
    assert (
        collateral.tcb_info_issuer_chain
        == (TDX / "synthetic" / "tcb_signing_chain.pem").read_bytes()
    )
    # Cached: nothing fetched again while fresh; offline from the files.
    assert cache.tdx_collateral(fmspc, ca, 21) == collateral
    assert len(fake.requests) == 4
    offline = StaticTdxCollateral.from_directory(tmp_path / "pcs" / f"{fmspc.hex()}-platform")
    assert offline.tdx_collateral(fmspc, ca, 0) == collateral
    # The verifier accepts the synthetic quote with it.
    from privatemode_proxy.attestation._intel import parse_intel_root
    from privatemode_proxy.attestation._tdx_verify import TdxVerifyOptions, verify_tdx_quote

    root = parse_intel_root((TDX / "synthetic" / "test_root_ca.pem").read_bytes())
    verify_tdx_quote(
        (TDX / "synthetic" / "quote_v4_synthetic.dat").read_bytes(),
        TdxVerifyOptions([root], evaluation_data_number=21),
        collateral=collateral,
        now=now[0],
    )
    # Past the TCB Info's nextUpdate: fetched again.
    now[0] += timedelta(days=20)
    cache.tdx_collateral(fmspc, ca, 21)
    assert len(fake.requests) == 8


def test_pcs_cache_failures_are_transient_or_final(tmp_path: Path) -> None:
    fmspc, ca = _synthetic_key()
    for status, error in ((503, CertificateFetchError), (404, CertificateUnavailableError)):
        fake = FakePcs(status=status)
        cache = PcsCollateralCache(
            tmp_path,
            client=httpx.Client(transport=httpx.MockTransport(fake.handler)),
            attempts=2,
            retry_delay=0,
        )
        with pytest.raises(error) as info:
            cache.tdx_collateral(fmspc, ca, 0)
        assert isinstance(info.value, CertificateFetchError) == (status == 503)
    with pytest.raises(CertificateUnavailableError, match="invalid FMSPC"):
        cache.tdx_collateral(b"\x00", "platform", 0)
    assert not (tmp_path / "pcs").exists() or not any((tmp_path / "pcs").rglob("*.json"))
