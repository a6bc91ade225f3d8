"""The Intel TDX validator: one Contrast TDX validator per reference value.

`validate_tdx_quote` is go-tdx-guest's `validate.TdxQuote` (expected values; every difference
reported); `contrast_validate_options` is what Contrast asks of it for one reference value.

Contrast v1.20 (internal/attestation/tdx/validator.go, internal/manifest TDXValidateOpts): verify
the quote with collateral and revocation checks against the Intel SGX Root CA, TCB Info no older
than the reference value's MinTCBEvaluationDataNumber; validate it against the reference value
(QE vendor, MRSEAM, TD_ATTRIBUTES exactly 1<<28, XFAM, MRTD, RTMR0..3, REPORT_DATA, PCK options);
then AllowedPIIDs. The Coordinator check (MRCONFIGID[0:32]) is the verifier's, as for SNP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ._contrast import TDX_ATTESTATION_TYPE
from ._errors import CheckFailure, EvidenceError
from ._intel import IntelRoot, TdxCollateral, TdxCollateralSource
from ._kds import CertificateFetchError
from ._manifest import Manifest, TdxReferenceValues, hex_bytes
from ._tdx import INTEL_QE_VENDOR_ID, SGX_TYPE_SCALABLE_WITH_INTEGRITY, PckExtensions, TdxQuote
from ._tdx_verify import (
    TdxCheckError,
    TdxQuoteVerification,
    TdxVerifyOptions,
    pck_collateral_key,
    verify_tdx_quote,
)
from ._validator import Checks, TeeVerification, first_passing_reference

__all__ = [
    "TdxValidateOptions",
    "TdxValidator",
    "contrast_validate_options",
    "validate_tdx_quote",
]

# go-tdx-guest validate.TdxQuote


@dataclass(frozen=True)
class TdxValidateOptions:
    """go-tdx-guest `validate.Options`: None = not checked."""

    mr_seam: bytes | None = None
    td_attributes: bytes | None = None
    xfam: bytes | None = None
    mr_td: bytes | None = None
    mr_config_id: bytes | None = None
    mr_owner: bytes | None = None
    mr_owner_config: bytes | None = None
    rtmrs: tuple[bytes | None, ...] = ()
    report_data: bytes | None = None
    qe_vendor_id: bytes | None = None
    minimum_tee_tcb_svn: bytes | None = None
    minimum_qe_svn: int = 0
    minimum_pce_svn: int = 0
    enable_td_debug_check: bool = False
    pck_sgx_type: int | None = None
    pck_smt_enabled: bool | None = None
    pck_dynamic_platform: bool | None = None
    pck_cached_keys: bool | None = None


_XFAM_FIXED1 = 0x3
_XFAM_ALLOWED = 0x6DBE7
_TD_ATTRIBUTES_ALLOWED = (1 << 0) | (1 << 28) | (1 << 30) | (1 << 63)


def validate_tdx_quote(
    quote: TdxQuote, extensions: PckExtensions, options: TdxValidateOptions
) -> list[tuple[str, str]]:
    """Every way the quote differs from `options`, as (check, message); empty if none."""
    failures: list[tuple[str, str]] = []
    exact = [
        ("MR_SEAM", quote.mr_seam, options.mr_seam),
        ("TD_ATTRIBUTES", quote.td_attributes, options.td_attributes),
        ("XFAM", quote.xfam, options.xfam),
        ("MR_TD", quote.mr_td, options.mr_td),
        ("MR_CONFIG_ID", quote.mr_config_id, options.mr_config_id),
        ("MR_OWNER", quote.mr_owner, options.mr_owner),
        ("MR_OWNER_CONFIG", quote.mr_owner_config, options.mr_owner_config),
    ]
    for i, want in enumerate(options.rtmrs):
        have = quote.rtmrs[i] if i < len(quote.rtmrs) else b""
        exact.append((f"RTMR{i}", have, want))
    exact += [
        ("REPORT_DATA", quote.report_data, options.report_data),
        ("QE_VENDOR_ID", quote.qe_vendor_id, options.qe_vendor_id),
    ]
    for name, have, want in exact:
        if want is not None and have != want:
            failures.append((name, f"quote field {name} is {have.hex()}. Expect {want.hex()}"))
    if options.minimum_tee_tcb_svn is not None and any(
        a < b for a, b in zip(quote.tee_tcb_svn, options.minimum_tee_tcb_svn, strict=False)
    ):
        failures.append(
            (
                "TEE_TCB_SVN",
                f"TEE TCB security-version number {_go_bytes(quote.tee_tcb_svn)} is less than "
                f"the required minimum {_go_bytes(options.minimum_tee_tcb_svn)}",
            )
        )
    for unit, svn_bytes, minimum in (
        ("QE", quote.qe_svn, options.minimum_qe_svn),
        ("PCE", quote.pce_svn, options.minimum_pce_svn),
    ):
        svn = int.from_bytes(svn_bytes, "little")
        if svn < minimum:
            failures.append(
                (
                    f"{unit}_SVN",
                    f"{unit} security-version number {svn} is less than the "
                    f"required minimum {minimum}",
                )
            )
    xfam = int.from_bytes(quote.xfam, "little")
    if xfam & _XFAM_FIXED1 != _XFAM_FIXED1 or xfam & ~_XFAM_ALLOWED:
        failures.append(
            (
                "XFAM",
                f"XFAM 0x{xfam:x} has fixed bits wrong (0x3 must be set, only "
                f"0x{_XFAM_ALLOWED:x} allowed)",
            )
        )
    attributes = int.from_bytes(quote.td_attributes, "little")
    if attributes & ~_TD_ATTRIBUTES_ALLOWED:
        failures.append(("TD_ATTRIBUTES", f"TD_ATTRIBUTES 0x{attributes:x} has reserved bits set"))
    if options.enable_td_debug_check and attributes & 1:
        failures.append(("TD_ATTRIBUTES", "TD_ATTRIBUTES has the DEBUG bit set"))
    pck_options: tuple[tuple[str, object, object], ...] = (
        ("SGX type", extensions.sgx_type, options.pck_sgx_type),
        ("SMT enabled", extensions.smt_enabled, options.pck_smt_enabled),
        ("dynamic platform", extensions.dynamic_platform, options.pck_dynamic_platform),
        ("cached keys", extensions.cached_keys, options.pck_cached_keys),
    )
    for label, actual, expected in pck_options:
        if expected is not None and actual != expected:
            failures.append(("PCK", f"PCK {label} is {actual}, expected {expected}"))
    return failures


def _go_bytes(data: bytes) -> str:
    return "[" + " ".join(str(b) for b in data) + "]"


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
        def check(
            quote: TdxQuote, rv: TdxReferenceValues, checks: Checks
        ) -> TdxQuoteVerification | None:
            verification = self._verify(quote, rv, checks, now)
            if verification is not None:
                validate_against_reference(verification, rv, expected_report_data, checks)
            return verification

        return first_passing_reference(
            "TDX",
            manifest.tdx,
            lambda index, rv: f"tdx[{index}]",
            lambda: TdxQuote.from_proto(raw_attestation_doc),
            check,
            _summary,
        )

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
