"""Every case of shared/vectors/tdx/expected.json: its verdict at its time T, and for a refusal
the failed check's name and go-tdx-guest's error text.

Real go-tdx-guest quotes and Intel collateral, their one-byte mutations, Contrast's quote against
its reference values, and the clearly labelled SYNTHETIC set (a test root) for the full-collateral
passes and the revocation / TCB-status refusals. All offline, from the vector files.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from privatemode_proxy.attestation._intel import TdxCollateral, parse_intel_root
from privatemode_proxy.attestation._manifest import Manifest
from privatemode_proxy.attestation._tdx import TdxQuote, pck_chain_certificates, pck_extensions
from privatemode_proxy.attestation._tdx_validator import (
    TdxValidateOptions,
    validate_against_reference,
    validate_tdx_quote,
)
from privatemode_proxy.attestation._tdx_verify import (
    TdxCheckError,
    TdxVerifyOptions,
    verify_tdx_quote,
)
from privatemode_proxy.attestation._validator import Checks
from privatemode_proxy.attestation._x509 import load_certificate


def _vectors() -> Path:
    for candidate in (
        os.environ.get("PRIVATEMODE_SHARED_VECTORS", ""),
        str(Path(__file__).resolve().parents[3] / "shared" / "vectors"),
        "/work/shared/vectors",
    ):
        if candidate and Path(candidate).is_dir():
            return Path(candidate) / "tdx"
    return Path("/work/shared/vectors/tdx")


TDX = _vectors()

#: The failed check's name for each go-tdx-guest error (by a distinctive prefix of its text).
CHECK_OF_ERROR = (
    ("could not convert raw bytes", "QUOTE"),
    ("incomplete PCK Certificate chain", "PCK_CHAIN"),
    ("unable to validate", "PCK_CHAIN"),
    ("error verifying PCK Certificate", "PCK_CHAIN"),
    ("unable to check for certificate revocation", "REVOCATION"),
    ("PCK Leaf certificate in PCK certificate chain was revoked", "REVOCATION"),
    ("unable to receive tcbInfo", "COLLATERAL"),
    ("could not verify collaterals obtained", "COLLATERAL_EXPIRED"),
    ("tcbInfo response verification failed", "TCB_INFO"),
    ("unable to verify message digest", "QUOTE_SIGNATURE"),
    ("attestation key in the quote is invalid", "QUOTE_SIGNATURE"),
    ("error verifying QE report", "QE_REPORT"),
    ("TDX TCB info reported by Intel PCS failed TCB status check", "TCB_STATUS"),
    ("MRSIGNER value", "QE_IDENTITY"),
    ("quote field MR_TD", "MR_TD"),
    ("quote field MR_SEAM", "MR_SEAM"),
    ("quote field REPORT_DATA", "REPORT_DATA"),
    ("quote field TD_ATTRIBUTES", "TD_ATTRIBUTES"),
    ("TEE TCB security-version number", "TEE_TCB_SVN"),
    ("PIID", "ALLOWED_PIIDS"),
    ("wrong policy hash for Coordinator", "MRCONFIGID"),
)


def _cases() -> list[dict[str, Any]]:
    return list(json.loads((TDX / "expected.json").read_text())["cases"])


def _check_of(error: str) -> str:
    return next(check for prefix, check in CHECK_OF_ERROR if error.startswith(prefix))


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _quote(name: str) -> TdxQuote:
    data = (TDX / name).read_bytes()
    if name.endswith(".dat"):
        return TdxQuote.from_abi_bytes(data)
    if name.endswith(".binpb"):
        return TdxQuote.from_proto(data)
    return _quote_from_protojson(json.loads(data))


def _quote_from_protojson(doc: dict[str, Any]) -> TdxQuote:
    def b(value: str | None) -> bytes:
        return base64.b64decode(value or "")

    header, body, signed = doc["header"], doc["tdQuoteBody"], doc["signedData"]
    cert = signed["certificationData"]
    qe_cert = cert["qeReportCertificationData"]
    report = qe_cert["qeReport"]
    from privatemode_proxy.attestation._tdx import EnclaveReport

    return TdxQuote(
        version=header["version"],
        attestation_key_type=header["attestationKeyType"],
        tee_type=header["teeType"],
        qe_svn=b(header["qeSvn"]),
        pce_svn=b(header["pceSvn"]),
        qe_vendor_id=b(header["qeVendorId"]),
        user_data=b(header["userData"]),
        tee_tcb_svn=b(body["teeTcbSvn"]),
        mr_seam=b(body["mrSeam"]),
        mr_signer_seam=b(body["mrSignerSeam"]),
        seam_attributes=b(body["seamAttributes"]),
        td_attributes=b(body["tdAttributes"]),
        xfam=b(body["xfam"]),
        mr_td=b(body["mrTd"]),
        mr_config_id=b(body["mrConfigId"]),
        mr_owner=b(body["mrOwner"]),
        mr_owner_config=b(body["mrOwnerConfig"]),
        rtmrs=tuple(b(r) for r in body["rtmrs"]),
        report_data=b(body["reportData"]),
        signed_data_size=doc["signedDataSize"],
        signature=b(signed["signature"]),
        attestation_key=b(signed["ecdsaAttestationKey"]),
        certification_data_type=cert["certificateDataType"],
        certification_data_size=cert["size"],
        qe_report=EnclaveReport(
            cpu_svn=b(report["cpuSvn"]),
            misc_select=report.get("miscSelect", 0),
            reserved1=b(report["reserved1"]),
            attributes=b(report["attributes"]),
            mr_enclave=b(report["mrEnclave"]),
            reserved2=b(report["reserved2"]),
            mr_signer=b(report["mrSigner"]),
            reserved3=b(report["reserved3"]),
            isv_prod_id=report["isvProdId"],
            isv_svn=report["isvSvn"],
            reserved4=b(report["reserved4"]),
            report_data=b(report["reportData"]),
        ),
        qe_report_signature=b(qe_cert["qeReportSignature"]),
        qe_auth_data_size=qe_cert["qeAuthData"]["parsedDataSize"],
        qe_auth_data=b(qe_cert["qeAuthData"]["data"]),
        pck_chain_type=qe_cert["pckCertificateChainData"]["certificateDataType"],
        pck_chain_size=qe_cert["pckCertificateChainData"]["size"],
        pck_chain=b(qe_cert["pckCertificateChainData"]["pckCertChain"]),
        extra_bytes=b(doc.get("extraBytes")),
    )


def _collateral(spec: dict[str, str]) -> TdxCollateral:
    """A case's collateral: its keys are `TdxCollateral`'s fields, its values vector files."""
    return TdxCollateral(**{field: (TDX / path).read_bytes() for field, path in spec.items()})


def case_collateral(case_id: str) -> TdxCollateral:
    """The collateral of the expected.json case `case_id`."""
    (case,) = (case for case in _cases() if case["id"] == case_id)
    return _collateral(case["collateral"])


def _go_validate_options(spec: dict[str, Any]) -> TdxValidateOptions:
    values = dict(json.loads((TDX / spec["go_options_file"]).read_text()))
    values.update(spec.get("override", {}))

    def hx(key: str) -> bytes | None:
        return bytes.fromhex(values[key]) if values.get(key) else None

    pck = values.get("PCK") or {}
    return TdxValidateOptions(
        mr_seam=hx("MrSeam"),
        td_attributes=hx("TdAttributes"),
        xfam=hx("Xfam"),
        mr_td=hx("MrTd"),
        mr_config_id=hx("MrConfigID"),
        mr_owner=hx("MrOwner"),
        mr_owner_config=hx("MrOwnerConfig"),
        rtmrs=tuple(bytes.fromhex(r) for r in values.get("Rtmrs") or ()),
        report_data=hx("ReportData"),
        qe_vendor_id=hx("QeVendorID"),
        minimum_tee_tcb_svn=hx("MinimumTeeTcbSvn"),
        minimum_qe_svn=values.get("MinimumQeSvn", 0),
        minimum_pce_svn=values.get("MinimumPceSvn", 0),
        enable_td_debug_check=values.get("EnableTdDebugCheck", False),
        pck_sgx_type=pck.get("SgxType"),
        pck_smt_enabled=pck.get("SMTEnabled"),
        pck_dynamic_platform=pck.get("DynamicPlatform"),
        pck_cached_keys=pck.get("CachedKeys"),
    )


def _validate(quote: TdxQuote, spec: dict[str, Any]) -> list[tuple[str, str]]:
    """The failures of a case's validation step, as (check, message)."""
    extensions = pck_extensions(load_certificate(pck_chain_certificates(quote.pck_chain)[0]))
    if "go_options" in spec:  # only ReportData, from a file
        report_data = (TDX / spec["go_options"]["ReportData"].lstrip("@")).read_bytes()
        return validate_tdx_quote(quote, extensions, TdxValidateOptions(report_data=report_data))
    if "go_options_file" in spec:
        return validate_tdx_quote(quote, extensions, _go_validate_options(spec))
    entry = (TDX / spec["contrast_reference_values"]).read_bytes()
    (rv,) = Manifest.from_json(b'{"ReferenceValues":{"tdx":[' + entry + b"]}}").tdx
    report_data = (
        quote.report_data if spec["report_data"] == "quote" else bytes.fromhex(spec["report_data"])
    )
    checks = Checks("tdx[0]")

    class _Verified:  # what validate_against_reference reads
        def __init__(self) -> None:
            self.quote = quote
            self.extensions = extensions

    validate_against_reference(_Verified(), rv, report_data, checks)  # type: ignore[arg-type]
    failures = [(f.check, f.message) for f in checks.failures]
    hashes = spec.get("coordinator_policy_hashes")
    if not failures and hashes is not None:
        wanted = [
            quote.mr_config_id[:32] if h == "@mrconfigid" else bytes.fromhex(h) for h in hashes
        ]
        if quote.mr_config_id[:32] not in wanted:
            failures.append(("MRCONFIGID", "wrong policy hash for Coordinator"))
    return failures


@pytest.mark.parametrize("case", _cases(), ids=lambda case: case["id"])
def test_tdx_vector_case(case: dict[str, Any]) -> None:
    if case["kind"] == "validate":
        quote = _quote(case["quote"])
        failures = _validate(quote, case["validate"])
        _assert_verdict(case["expect"], case.get("error"), failures)
        return
    options = case["options"]
    root = parse_intel_root((TDX / options["TrustedRoot"]).read_bytes())
    verify_options = TdxVerifyOptions(
        trusted_roots=[root],
        get_collateral=options["GetCollateral"],
        check_revocations=options["CheckRevocations"],
        evaluation_data_number=options["EvaluationDataNumber"],
    )
    collateral = _collateral(case["collateral"]) if case.get("collateral") else None
    data: TdxQuote | bytes = (
        (TDX / case["quote"]).read_bytes()
        if case["quote"].endswith(".dat")
        else _quote(case["quote"])
    )
    failures: list[tuple[str, str]] = []
    try:
        verification = verify_tdx_quote(
            data, verify_options, collateral=collateral, now=_time(case["T"])
        )
    except TdxCheckError as exc:
        failures = [(exc.check, exc.message)]
    _assert_verdict(case["expect"], case.get("error"), failures)
    validate = case.get("validate")
    if validate is not None and not failures:
        failures = _validate(verification.quote, validate)
        _assert_verdict(validate["expect"], validate.get("error"), failures)


def _assert_verdict(expect: str, error: str | None, failures: list[tuple[str, str]]) -> None:
    if expect == "PASS":
        assert failures == []
        return
    assert failures, "expected a refusal"
    assert error is not None
    text = " | ".join(message for _, message in failures)
    assert _normalise(error) in _normalise(text)
    assert _check_of(error) in {check for check, _ in failures}


def _normalise(text: str) -> str:
    # go-tdx-guest appends "(true)" (an internal flag) to one chain error; the rest is its text.
    return " ".join(text.replace(" (true)", "").split())


def test_every_case_is_run() -> None:
    assert len(_cases()) == 52
