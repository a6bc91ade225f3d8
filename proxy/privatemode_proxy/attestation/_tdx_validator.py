"""The Intel TDX validator: one Contrast TDX validator per reference value.

Contrast v1.20 (internal/attestation/tdx/validator.go, internal/manifest TDXValidateOpts): verify
the quote with collateral and revocation checks against the Intel SGX Root CA, TCB Info no older
than the reference value's MinTCBEvaluationDataNumber; validate it against the reference value
(QE vendor, MRSEAM, TD_ATTRIBUTES exactly 1<<28, XFAM, MRTD, RTMR0..3, REPORT_DATA, PCK options);
then AllowedPIIDs. The Coordinator check (MRCONFIGID[0:32]) is the verifier's, as for SNP.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ._contrast import TDX_ATTESTATION_TYPE
from ._errors import CheckFailure, EvidenceError
from ._intel import IntelRoot, TdxCollateral, TdxCollateralSource
from ._kds import CertificateFetchError
from ._manifest import Manifest, TdxReferenceValues, hex_bytes
from ._tdx import INTEL_QE_VENDOR_ID, SGX_TYPE_SCALABLE_WITH_INTEGRITY, TdxQuote
from ._tdx_verify import (
    TdxCheckError,
    TdxQuoteVerification,
    TdxValidateOptions,
    TdxVerifyOptions,
    pck_collateral_key,
    validate_tdx_quote,
    verify_tdx_quote,
)
from ._validator import Checks, TeeVerification

__all__ = ["TdxValidator", "contrast_validate_options"]

#: TD_ATTRIBUTES Contrast requires: SEPT_VE_DISABLE only (8 bytes, little-endian).
CONTRAST_TD_ATTRIBUTES = (1 << 28).to_bytes(8, "little")


def contrast_validate_options(rv: TdxReferenceValues, report_data: bytes) -> TdxValidateOptions:
    """The `validate.Options` Contrast builds from a ``ReferenceValues.tdx`` entry."""
    return TdxValidateOptions(
        qe_vendor_id=INTEL_QE_VENDOR_ID,
        mr_seam=hex_bytes(rv.mr_seam, 48) or b"",
        td_attributes=CONTRAST_TD_ATTRIBUTES,
        xfam=hex_bytes(rv.xfam, 8) or b"",
        mr_td=hex_bytes(rv.mr_td, 48) or b"",
        rtmrs=tuple(hex_bytes(r, 48) or b"" for r in rv.rtmrs),
        report_data=report_data,
        pck_sgx_type=SGX_TYPE_SCALABLE_WITH_INTEGRITY if rv.memory_integrity else None,
        pck_smt_enabled=False if rv.smt_disabled else None,
        pck_dynamic_platform=False if rv.static_platform else None,
    )


def validate_against_reference(
    verification: TdxQuoteVerification, rv: TdxReferenceValues, report_data: bytes, checks: Checks
) -> None:
    """Contrast's validation of a verified quote against one reference value (all failures)."""
    options = contrast_validate_options(rv, report_data)
    for check, message in validate_tdx_quote(verification.quote, verification.extensions, options):
        checks.fail(check, f"validating report data: {message}")
    if rv.allowed_piids:
        piid = verification.extensions.piid or b""
        allowed = {hex_bytes(p, 16) for p in rv.allowed_piids}
        if piid not in allowed:
            checks.fail("ALLOWED_PIIDS", f"PIID {piid.hex()} not in allowed PIIDs")


class TdxValidator:
    """Contrast's TDX validators, one per ``ReferenceValues.tdx`` entry, tried in order.

    `trusted_roots` are the Intel roots trusted (e.g. `intel_roots()`); `collateral` supplies
    TCB Info, QE Identity and CRLs (None: nothing is fetched, so TDX evidence fails closed).
    """

    tee: str = "Intel TDX"
    attestation_type: tuple[int, ...] = TDX_ATTESTATION_TYPE

    def __init__(
        self,
        trusted_roots: Sequence[IntelRoot],
        collateral: TdxCollateralSource | None = None,
    ) -> None:
        self.trusted_roots = tuple(trusted_roots)
        self.collateral = collateral

    def validate(
        self,
        manifest: Manifest,
        raw_attestation_doc: bytes,
        expected_report_data: bytes,
        now: datetime,
    ) -> tuple[TeeVerification | None, list[CheckFailure]]:
        if not manifest.tdx:
            return None, []
        failures: list[CheckFailure] = []
        quote: TdxQuote | None = None
        decode_error = ""
        try:
            quote = TdxQuote.from_proto(raw_attestation_doc)
        except EvidenceError as exc:
            decode_error = str(exc)
        for index, rv in enumerate(manifest.tdx):
            checks = Checks(f"tdx[{index}]")
            if quote is None:
                checks.fail("EVIDENCE", f"cannot decode the TDX evidence: {decode_error}")
                failures.extend(checks.failures)
                continue
            verification = self._verify(quote, rv, checks, now)
            if verification is not None:
                validate_against_reference(verification, rv, expected_report_data, checks)
                if not checks.failures:
                    return _summary(verification, checks.reference or ""), []
            failures.extend(checks.failures)
        return None, failures

    def _verify(
        self, quote: TdxQuote, rv: TdxReferenceValues, checks: Checks, now: datetime
    ) -> TdxQuoteVerification | None:
        options = TdxVerifyOptions(
            trusted_roots=self.trusted_roots,
            evaluation_data_number=max(0, rv.min_tcb_evaluation_data_number),
        )
        try:
            collateral = self._collateral(quote, options.evaluation_data_number)
            return verify_tdx_quote(quote, options, collateral=collateral, now=now)
        except TdxCheckError as exc:
            checks.fail(
                exc.check, f"verifying report signature: {exc.message}", transient=exc.transient
            )
            return None

    def _collateral(self, quote: TdxQuote, evaluation_data_number: int) -> TdxCollateral:
        try:
            quote.check()
        except EvidenceError as exc:
            raise TdxCheckError("QUOTE", str(exc)) from None
        fmspc, ca = pck_collateral_key(quote)
        if self.collateral is None:
            raise TdxCheckError(
                "COLLATERAL", "unable to receive tcbInfo: no collateral source was given"
            )
        try:
            return self.collateral.tdx_collateral(fmspc, ca, evaluation_data_number)
        except Exception as exc:
            raise TdxCheckError(
                "COLLATERAL",
                f"unable to receive collateral for FMSPC {fmspc.hex()}: {exc}",
                transient=isinstance(exc, CertificateFetchError),
            ) from None


def _summary(verification: TdxQuoteVerification, reference: str) -> TeeVerification:
    quote = verification.quote
    measurements = {
        "MRTD": quote.mr_td.hex(),
        **{f"RTMR{i}": rtmr.hex() for i, rtmr in enumerate(quote.rtmrs)},
        "MRSEAM": quote.mr_seam.hex(),
        "MRCONFIGID": quote.mr_config_id.hex(),
        "XFAM": quote.xfam.hex(),
        "TD_ATTRIBUTES": quote.td_attributes.hex(),
    }
    tcb = {f"tee_tcb_svn[{i}]": b for i, b in enumerate(quote.tee_tcb_svn) if b}
    tcb["qe_isv_svn"] = quote.qe_report.isv_svn
    tcb["pce_svn"] = verification.extensions.pce_svn
    if verification.tcb_evaluation_data_number is not None:
        tcb["tcb_evaluation_data_number"] = verification.tcb_evaluation_data_number
    return TeeVerification(
        tee=TdxValidator.tee,
        reference_value=reference,
        coordinator_policy=quote.mr_config_id[:32],
        product=f"TDX FMSPC {verification.extensions.fmspc.hex()}",
        measurement=quote.mr_td.hex(),
        measurements=measurements,
        tcb=tcb,
        chip_id=(verification.extensions.piid or b"").hex(),
        trusted_root=verification.root.source,
    )
