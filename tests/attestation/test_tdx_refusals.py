"""Every fail-closed branch of the TDX verifier, made to refuse.

The local backend's Intel-like identity holds every key (test keys only), so each test re-signs
collateral, CRLs or a quote with exactly one thing wrong and checks the refusal's check name and
wording. The vector tests (test_tdx_vectors.py) cover the same steps on Intel's real data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from attestation_support import NONCE
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from privatemode_proxy.attestation import (
    CertificateUnavailableError,
    PcsCollateralCache,
    StaticTdxCollateral,
    TdxCollateral,
    TdxQuote,
)
from privatemode_proxy.attestation._errors import EvidenceError
from privatemode_proxy.attestation._intel import intel_roots, parse_intel_root
from privatemode_proxy.attestation._tdx import pck_chain_certificates, pck_extensions
from privatemode_proxy.attestation._tdx_validator import TdxValidateOptions, validate_tdx_quote
from privatemode_proxy.attestation._tdx_verify import (
    TdxCheckError,
    TdxVerifyOptions,
    verify_tdx_quote,
)
from privatemode_proxy.attestation._x509 import load_certificate
from privatemode_proxy.local._issuer import LocalIdentity
from privatemode_proxy.local._tdx_issuer import _p256_rs, _signed_json


@pytest.fixture(scope="module")
def tdx(tmp_path_factory: pytest.TempPathFactory) -> LocalIdentity:
    return LocalIdentity.load_or_create(tmp_path_factory.mktemp("tdx-refusals"), tee="tdx")


NOW = datetime.now(UTC)


def _verify(identity: LocalIdentity, *, quote: TdxQuote | None = None, **changes: Any) -> Any:
    collateral = replace(identity.tdx_collateral(), **changes)
    return verify_tdx_quote(
        quote or identity.tdx_quote(NONCE),
        TdxVerifyOptions([identity.tdx_trusted_root()], evaluation_data_number=21),
        collateral=collateral,
        now=NOW,
    )


def _refused(identity: LocalIdentity, check: str, text: str, **changes: Any) -> None:
    with pytest.raises(TdxCheckError) as info:
        _verify(identity, **changes)
    assert info.value.check == check, info.value.message
    assert text in info.value.message


def _keys(identity: LocalIdentity) -> dict[str, ec.EllipticCurvePrivateKey]:
    assert identity.tdx is not None
    return identity.tdx.keys


def _resigned(identity: LocalIdentity, key: str, change: Callable[[dict[str, Any]], None]) -> bytes:
    """The collateral body `key` (tcb_info or qe_identity) changed, validly re-signed."""
    name = "tcbInfo" if key == "tcb_info" else "enclaveIdentity"
    body = json.loads(getattr(identity.tdx_collateral(), key))[name]
    change(body)
    return _signed_json(name, body, _keys(identity)["tcb_signing"])


def _first_block(chain: bytes) -> bytes:
    end = b"-----END CERTIFICATE-----\n"
    return chain[: chain.index(end) + len(end)]


def _resigned_quote(identity: LocalIdentity, **changes: Any) -> TdxQuote:
    quote = identity.tdx_quote(NONCE).replace(**changes)
    return quote.replace(
        signature=_p256_rs(_keys(identity)["attestation"], quote.header_and_body())
    )


def test_the_helpers_alone_pass(tdx: LocalIdentity) -> None:
    unchanged = _resigned(tdx, "tcb_info", lambda body: None)
    assert _verify(tdx, tcb_info=unchanged).tcb_status == "UpToDate"
    assert _verify(tdx, quote=_resigned_quote(tdx)).tcb_status == "UpToDate"


# -- TCB Info --------------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        target = body
        *parents, last = path.split(".")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]  # type: ignore[index]
        target[last] = value  # type: ignore[index]

    return change


@pytest.mark.parametrize(
    ("path", "value", "check", "text"),
    [
        ("fmspc", "ffffffffffff", "TCB_INFO", "FMSPC from PCK Certificate"),
        ("pceId", "0101", "TCB_INFO", "PCEID from PCK Certificate"),
        ("tdxModule.mrsigner", "11" * 48, "TCB_INFO", "MRSIGNERSEAM value"),
        ("tdxModule.attributes", "0100000000000000", "TCB_INFO", "SEAMATTRIBUTES"),
        ("tcbLevels.0.tcb.pcesvn", 99, "TCB_STATUS", "no matching TCB level found"),
        ("tcbLevels.0.tcb.sgxtcbcomponents", [{"svn": 0}], "TCB_INFO", "malformed TDX TCB"),
        ("tcbLevels.0.tcbStatus", "Unknown", "COLLATERAL", "unknown TCB status"),
        ("tcbLevels.0.tcbStatus", "Revoked", "TCB_STATUS", 'found "Revoked"'),
        ("tcbLevels.0.tcbStatus", "OutOfDate", "TCB_STATUS", "it is now OutOfDate"),
        ("id", "SGX", "TCB_INFO", "not a TDX TCB Info v3"),
        ("version", 2, "TCB_INFO", "not a TDX TCB Info v3"),
        ("tcbEvaluationDataNumber", 20, "COLLATERAL", "(got 20, requested 21)"),
        ("nextUpdate", "2000-01-01T00:00:00Z", "COLLATERAL_EXPIRED", "tcbInfo has expired"),
        ("nextUpdate", "soon", "COLLATERAL", "tcbInfo has no valid nextUpdate"),
    ],
)
def test_tcb_info_refusals(
    tdx: LocalIdentity, path: str, value: Any, check: str, text: str
) -> None:
    _refused(tdx, check, text, tcb_info=_resigned(tdx, "tcb_info", _set(path, value)))


def test_tcb_info_signature_and_chain(tdx: LocalIdentity) -> None:
    body = tdx.tdx_collateral().tcb_info
    tampered = body.replace(b'"UpToDate"', b'"UpToDate" ', 1)  # inside the signed value
    _refused(tdx, "TCB_INFO", "ECDSA verification failure", tcb_info=tampered)
    _refused(tdx, "COLLATERAL", "unable to receive tcbInfo", tcb_info=b"not json")
    chain = tdx.tdx_collateral().tcb_info_issuer_chain
    _refused(tdx, "COLLATERAL", "two PEM", tcb_info_issuer_chain=_first_block(chain))
    # A TCB signing certificate not under a trusted root.
    other = ec.generate_private_key(ec.SECP256R1())
    rogue = _cert("Intel SGX TCB Signing", other, _keys(tdx)["root"], _root(tdx))
    root_pem = _root(tdx).public_bytes(serialization.Encoding.PEM)
    _refused(
        tdx,
        "TCB_INFO",
        "ECDSA verification failure",
        tcb_info_issuer_chain=rogue.public_bytes(serialization.Encoding.PEM) + root_pem,
    )


def test_tdx_module_identity_path(tdx: LocalIdentity) -> None:
    # TEE_TCB_SVN[1] > 0: the status comes from tdxModuleIdentities["TDX_01"].
    svn = bytes([3, 1, 5]) + bytes(13)
    quote = _resigned_quote(tdx, tee_tcb_svn=svn)

    def identity(status: str, isvsvn: int = 3) -> Callable[[dict[str, Any]], None]:
        def change(body: dict[str, Any]) -> None:
            body["tdxModuleIdentities"] = [
                {"id": "TDX_01", "tcbLevels": [{"tcb": {"isvsvn": isvsvn}, "tcbStatus": status}]}
            ]

        return change

    ok = _resigned(tdx, "tcb_info", identity("UpToDate"))
    assert _verify(tdx, quote=quote, tcb_info=ok).tcb_status == "UpToDate"
    for change, text in (
        (identity("OutOfDate"), "it is now OutOfDate"),
        (identity("UpToDate", isvsvn=9), "no matching TCB level for TDX module TDX_01"),
        (lambda body: None, "no TDX module identity TDX_01"),
    ):
        with pytest.raises(TdxCheckError, match=text) as info:
            _verify(tdx, quote=quote, tcb_info=_resigned(tdx, "tcb_info", change))
        assert info.value.check == "TCB_STATUS"


# -- QE Identity -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "text"),
    [
        ("miscselect", "00000001", "MISCSELECT"),
        ("attributes", "00" * 16, "ATTRIBUTES value from QE report"),
        ("isvprodid", 9, "ISV PRODID value(2)"),
        ("mrsigner", "00" * 32, "MRSIGNER value"),
        ("tcbLevels.0.tcb.isvsvn", 99, "no matching TCB level found"),
        ("tcbLevels.0.tcbStatus", "OutOfDate", "QE TCB is OutOfDate"),
        ("tcbLevels.0.tcbStatus", "SWHardeningNeeded", 'found "SWHardeningNeeded"'),
        ("miscselectMask", "zz", "malformed QE Identity"),
        ("id", "QE", "not a TD_QE identity v2"),
    ],
)
def test_qe_identity_refusals(tdx: LocalIdentity, path: str, value: Any, text: str) -> None:
    _refused(tdx, "QE_IDENTITY", text, qe_identity=_resigned(tdx, "qe_identity", _set(path, value)))


def test_qe_identity_collateral_problems(tdx: LocalIdentity) -> None:
    _refused(
        tdx,
        "COLLATERAL",
        "unable to receive QeIdentity",
        qe_identity=_resigned(tdx, "qe_identity", _set("tcbLevels.0.tcbStatus", "Bogus")),
    )
    _refused(
        tdx,
        "COLLATERAL_EXPIRED",
        "QeIdentity has expired",
        qe_identity=_resigned(tdx, "qe_identity", _set("nextUpdate", "2000-01-01T00:00:00Z")),
    )


# -- CRLs and revocation ---------------------------------------------------------------------


def _root(identity: LocalIdentity) -> x509.Certificate:
    assert identity.tdx is not None
    return identity.tdx.root


def _crl(
    issuer: x509.Certificate,
    key: Any,
    *,
    revoke: tuple[int, ...] = (),
    next_update: datetime | None = None,
) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(NOW - timedelta(days=1))
        .next_update(next_update or NOW + timedelta(days=5))
    )
    for serial in revoke:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(datetime(2026, 1, 10, tzinfo=UTC))
            .build()
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _cert(
    cn: str,
    key: Any,
    issuer_key: Any,
    issuer: x509.Certificate | None,
    *,
    issuer_cn: str | None = None,
    digest: hashes.HashAlgorithm | None = None,
) -> x509.Certificate:
    """A certificate for `key`, issued by `issuer` (None: self-issued, or named `issuer_cn`)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    if issuer is not None:
        issuer_name = issuer.subject
    elif issuer_cn is not None:
        issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)])
    else:
        issuer_name = name
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .sign(issuer_key, digest or hashes.SHA256())
    )


def test_revocation_refusals(tdx: LocalIdentity) -> None:
    assert tdx.tdx is not None
    keys = _keys(tdx)
    root, pck_ca, pck, signing = tdx.tdx.root, tdx.tdx.pck_ca, tdx.tdx.pck, tdx.tdx.tcb_signing
    _refused(
        tdx,
        "REVOCATION",
        "PCK Leaf certificate in PCK certificate chain was revoked at "
        "2026-01-10 00:00:00 +0000 UTC",
        pck_crl=_crl(pck_ca, keys["pck_ca"], revoke=(pck.serial_number,)),
    )
    _refused(
        tdx,
        "REVOCATION",
        "intermediate certificate in PCK certificate chain was revoked",
        root_crl=_crl(root, keys["root"], revoke=(pck_ca.serial_number,)),
    )
    _refused(
        tdx,
        "TCB_INFO",
        "the signing certificate is revoked",
        root_crl=_crl(root, keys["root"], revoke=(signing.serial_number,)),
    )
    impostor = ec.generate_private_key(ec.SECP256R1())
    _refused(tdx, "REVOCATION", "root CA CRL", root_crl=_crl(root, impostor))
    _refused(tdx, "REVOCATION", "PCK CRL", pck_crl=_crl(pck_ca, impostor))
    _refused(tdx, "REVOCATION", "PCK CRL", pck_crl=_crl(root, keys["root"]))
    past = NOW - timedelta(hours=1)
    _refused(
        tdx,
        "COLLATERAL_EXPIRED",
        "root CA CRL has expired",
        root_crl=_crl(root, keys["root"], next_update=past),
    )
    _refused(
        tdx,
        "COLLATERAL_EXPIRED",
        "PCK CRL has expired",
        pck_crl=_crl(pck_ca, keys["pck_ca"], next_update=past),
    )
    _refused(tdx, "COLLATERAL", "unable to receive PCK CRL", pck_crl=b"garbage")
    _refused(tdx, "COLLATERAL", "unable to receive Root CA CRL", root_crl=b"garbage")
    chain = tdx.tdx_collateral().pck_crl_issuer_chain
    _refused(tdx, "COLLATERAL", "two PEM", pck_crl_issuer_chain=_first_block(chain))


def test_no_collateral_and_unknown_ca(tdx: LocalIdentity) -> None:
    quote = tdx.tdx_quote(NONCE)
    options = TdxVerifyOptions([tdx.tdx_trusted_root()])
    with pytest.raises(TdxCheckError, match="no collateral given"):
        verify_tdx_quote(quote, options, now=NOW)


# -- The chain's certificates ------------------------------------------------------------------


def _chain_with(identity: LocalIdentity, *, root: x509.Certificate | None = None) -> TdxQuote:
    assert identity.tdx is not None
    quote = identity.tdx_quote(NONCE)
    certs = (identity.tdx.pck, identity.tdx.pck_ca, root or identity.tdx.root)
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    return quote.replace(
        pck_chain=chain,
        pck_chain_size=len(chain),
        certification_data_size=quote.certification_data_size - quote.pck_chain_size + len(chain),
        signed_data_size=quote.signed_data_size - quote.pck_chain_size + len(chain),
    )


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (
            lambda key: _cert("Not Intel SGX Root CA", key, key, None),
            "certificate subject CN is not 'Intel SGX Root CA'",
        ),
        (
            lambda key: _cert("Intel SGX Root CA", key, key, None, issuer_cn="Someone else"),
            "root certificate is not self-issued",
        ),
        (
            lambda key: _cert("Intel SGX Root CA", key, key, None, digest=hashes.SHA384()),
            "not signed with ECDSA-SHA256",
        ),
    ],
)
def test_chain_root_rules(tdx: LocalIdentity, make: Callable[[Any], Any], text: str) -> None:
    root = make(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(TdxCheckError, match=text) as info:
        _verify(tdx, quote=_chain_with(tdx, root=root))
    assert info.value.check == "PCK_CHAIN"
    assert "unable to validate root cert" in info.value.message


def test_a_trusted_root_past_its_validity(tdx: LocalIdentity) -> None:
    with pytest.raises(TdxCheckError, match="is after") as info:
        verify_tdx_quote(
            tdx.tdx_quote(NONCE),
            TdxVerifyOptions(
                [tdx.tdx_trusted_root()], get_collateral=False, check_revocations=False
            ),
            now=NOW + timedelta(days=20 * 365),
        )
    assert info.value.check == "PCK_CHAIN"


# -- Intel roots and the PCS source --------------------------------------------------------------


def test_intel_root_rules() -> None:
    (embedded,) = intel_roots()
    assert "embedded" in repr(embedded)
    assert parse_intel_root(embedded.to_pem()).der == embedded.der
    key = ec.generate_private_key(ec.SECP256R1())
    for pem, text in (
        (embedded.to_pem() * 2, "one PEM CERTIFICATE block"),
        (_pem(_cert("Other Root", key, key, None)), "CN is not"),
        (
            _pem(
                _cert(
                    "Intel SGX Root CA",
                    rsa.generate_private_key(65537, 2048),
                    rsa.generate_private_key(65537, 2048),
                    None,
                )
            ),
            "not ECDSA P-256",
        ),
        (
            _pem(_cert("Intel SGX Root CA", key, ec.generate_private_key(ec.SECP256R1()), None)),
            "self-signature",
        ),
    ):
        with pytest.raises(EvidenceError, match=text):
            parse_intel_root(pem)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def test_static_collateral_by_fmspc(tdx: LocalIdentity, tmp_path: Path) -> None:
    collateral = tdx.tdx_collateral()
    source = StaticTdxCollateral({b"\x01" * 6: collateral})
    assert source.tdx_collateral(b"\x01" * 6, "platform", 0) == collateral
    with pytest.raises(CertificateUnavailableError):
        source.tdx_collateral(b"\x02" * 6, "platform", 0)
    with pytest.raises(CertificateUnavailableError, match="no TDX collateral"):
        StaticTdxCollateral.from_directory(tmp_path / "missing")


def test_pcs_answers_that_are_refused(tmp_path: Path) -> None:
    def answer(headers: dict[str, str], body: bytes) -> PcsCollateralCache:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, content=body, headers=headers)

        return PcsCollateralCache(
            tmp_path, client=httpx.Client(transport=httpx.MockTransport(handler)), attempts=1
        )

    with pytest.raises(CertificateUnavailableError, match="without the TCB-Info-Issuer-Chain"):
        answer({}, b"{}").tdx_collateral(b"\x00" * 6, "platform", 0)
    chain = "%0A".join(["-----BEGIN%20CERTIFICATE-----"])  # not a usable chain
    everything = {
        "TCB-Info-Issuer-Chain": chain,
        "SGX-Enclave-Identity-Issuer-Chain": chain,
        "SGX-PCK-CRL-Issuer-Chain": chain,
    }
    with pytest.raises(CertificateUnavailableError, match="names no https CRL"):
        answer(everything, b"{}").tdx_collateral(b"\x00" * 6, "processor", 0)


def test_tdx_collateral_of_an_snp_identity_is_refused(tmp_path: Path) -> None:
    snp = LocalIdentity.load_or_create(tmp_path / "snp")
    assert snp.tdx_session_options() == {}
    with pytest.raises(CertificateUnavailableError):
        snp.tdx_collateral()
    with pytest.raises(ValueError, match="SEV-SNP"):
        snp.tdx_quote(NONCE)
    with pytest.raises(ValueError, match="tee must be"):
        LocalIdentity.load_or_create(tmp_path / "x", tee="sgx")


def test_unused_collateral_type_is_plain_data() -> None:
    assert TdxCollateral(b"", b"", b"", b"", b"", b"", b"").tcb_info == b""


def test_qe_and_pce_svn_below_the_minimum_are_refused(tdx: LocalIdentity) -> None:
    quote = tdx.tdx_quote(NONCE)
    extensions = pck_extensions(load_certificate(pck_chain_certificates(quote.pck_chain)[0]))
    qe = int.from_bytes(quote.qe_svn, "little")
    pce = int.from_bytes(quote.pce_svn, "little")

    def svn_failures(minimum_qe: int, minimum_pce: int) -> list[tuple[str, str]]:
        options = TdxValidateOptions(minimum_qe_svn=minimum_qe, minimum_pce_svn=minimum_pce)
        failures = validate_tdx_quote(quote, extensions, options)
        return [f for f in failures if f[0] in ("QE_SVN", "PCE_SVN")]

    assert svn_failures(qe, pce) == []  # equal to the minimum passes
    assert svn_failures(qe + 1, pce + 2) == [
        ("QE_SVN", f"QE security-version number {qe} is less than the required minimum {qe + 1}"),
        (
            "PCE_SVN",
            f"PCE security-version number {pce} is less than the required minimum {pce + 2}",
        ),
    ]
