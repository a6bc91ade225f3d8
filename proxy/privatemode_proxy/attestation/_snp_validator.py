"""The SEV-SNP validator: one Contrast SNP validator per reference value (attestation.md §3).

`SnpValidator` plugs into `verify_attestation` (see `_validator`); `verify_snp_report` runs the
core report checks alone (report, VCEK, chain to a trusted AMD root, signature, TCB relations).
No I/O: a VCEK or CRL the evidence lacks comes from a `CertificateSource`.
Over 600 lines on purpose: the steps of attestation.md §3 in one place, in that order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ._amd import (
    KdsExtensions,
    amd_name_problems,
    amd_signature_problem,
    kds_crl_url,
    kds_extensions,
    product_line_of_product_name,
    verify_amd_signature,
)
from ._contrast import SNP_ATTESTATION_TYPE, id_key_digest
from ._errors import AttestationError, CheckFailure, EvidenceError
from ._kds import CertificateFetchError, CertificateSource
from ._manifest import Manifest, SnpReferenceValues, hex_bytes, reference_value_label
from ._roots import TrustedRoot
from ._snp import (
    CRL_EXTRA_KEY,
    SIGNATURE_ALGO_ECDSA_P384_SHA384,
    SIGNED_REPORT_SIZE,
    SIGNER_NONE,
    SIGNER_VCEK,
    SIGNER_VLEK,
    GuestPolicy,
    PlatformInfo,
    SignerInfo,
    SnpAttestation,
    SnpReport,
    TcbParts,
    cpuid_fms,
)
from ._validator import (
    Checks,
    Stop,
    TeeVerification,
    describe,
    first_passing_reference,
    iso,
    now_utc,
)
from ._x509 import (
    certificate_der,
    certificate_public_key,
    certificate_valid_at,
    load_certificate,
    load_crl,
)

__all__ = ["SnpValidator", "SnpVerification", "verify_snp_report"]

logger = logging.getLogger(__name__)

#: Product names a VCEK may carry when the product line comes from a v2 report's context.
_V2_PRODUCT_NAMES = frozenset(
    {"Milan-B0", "Milan-B1", "Genoa-B0", "Genoa-B1", "Genoa-B2", "Turin-B0", "Turin-B1"}
)


class SnpValidator:
    """Contrast's SEV-SNP validators, one per ``ReferenceValues.snp`` entry, tried in order.

    `trusted_roots` are the only ASK/ARK pairs trusted; `certificates` supplies a VCEK or CRL
    the evidence lacks (None: nothing is fetched, so evidence without a usable CRL fails).
    """

    tee: str = "AMD SEV-SNP"
    attestation_type: tuple[int, ...] = SNP_ATTESTATION_TYPE

    def __init__(
        self,
        trusted_roots: Sequence[TrustedRoot],
        certificates: CertificateSource | None = None,
    ) -> None:
        self.trusted_roots = tuple(trusted_roots)
        self.certificates = certificates

    def validate(
        self,
        manifest: Manifest,
        raw_attestation_doc: bytes,
        expected_report_data: bytes,
        now: datetime,
    ) -> tuple[TeeVerification | None, list[CheckFailure]]:
        def check(
            attestation: SnpAttestation, rv: SnpReferenceValues, checks: Checks
        ) -> SnpVerification:
            return _validate_snp(
                attestation,
                rv,
                checks,
                expected_report_data,
                self.trusted_roots,
                now,
                self.certificates,
            )

        return first_passing_reference(
            "SEV-SNP",
            manifest.snp,
            reference_value_label,
            lambda: SnpAttestation.from_proto(raw_attestation_doc),
            check,
            _summary,
        )


def _summary(verification: SnpVerification, reference: str) -> TeeVerification:
    report = verification.report
    root = verification.root
    return TeeVerification(
        tee=SnpValidator.tee,
        reference_value=reference,
        coordinator_policy=report.host_data,
        product=verification.product_line,
        measurement=report.measurement.hex(),
        measurements={"MEASUREMENT": report.measurement.hex(), "HOST_DATA": report.host_data.hex()},
        tcb=TcbParts.from_int(report.reported_tcb).as_dict(),
        chip_id=report.chip_id.hex(),
        trusted_root=root.source or root.product_line,
    )


@dataclass(frozen=True)
class SnpVerification:
    """The outcome of the SEV-SNP checks for one report."""

    report: SnpReport
    raw_report: bytes
    vcek: x509.Certificate
    extensions: KdsExtensions
    product_line: str
    root: TrustedRoot


def verify_snp_report(
    report: bytes | SnpReport,
    vcek: bytes,
    *,
    trusted_roots: Sequence[TrustedRoot],
    now: datetime | None = None,
    product_line: str | None = None,
) -> SnpVerification:
    """The core SEV-SNP checks of one report, without a manifest or Contrast policy.

    Report parses (reserved bytes zero, policy bits), the VCEK meets AMD's rules and chains to a
    trusted root of the report's product line, all three certificates are valid at `now`, the
    report signature verifies, COMMITTED_TCB <= CURRENT_TCB, REPORTED_TCB equals the VCEK's TCB,
    VCEK TCB <= CURRENT_TCB, firmware versions are consistent, CHIP_ID equals the VCEK's HWID.
    `product_line` is needed only for version 2 reports whose VCEK does not say it.
    """
    checks = Checks(None)
    try:
        try:
            result = _core_report_checks(
                report, vcek, checks, tuple(trusted_roots), now_utc(now), product_line
            )
        except Stop:
            result = None
    except Exception as exc:
        raise AttestationError.single(
            "INTERNAL", f"INTERNAL unexpected {type(exc).__name__} while verifying: {exc}"
        ) from exc
    if checks.failures or result is None:
        raise AttestationError(
            "SEV-SNP report rejected: " + describe(checks.failures), checks.failures
        )
    return result


def _validate_snp(
    attestation: SnpAttestation,
    rv: SnpReferenceValues,
    checks: Checks,
    expected_report_data: bytes,
    trusted_roots: Sequence[TrustedRoot],
    now: datetime,
    certificates: CertificateSource | None,
) -> SnpVerification:
    # A. The report must be present.
    report = attestation.report
    if report is None:
        raise checks.stop("EVIDENCE", "the SEV-SNP evidence has no report")
    chain = attestation.certificate_chain
    extras = chain.extras if chain is not None else {}

    # C. Product line: signed CPUID bytes (v3+), else the evidence's product, else the rv's.
    line = report.product_line()
    if line is None and attestation.product is not None and attestation.product.name != 0:
        line = attestation.product.product_line
    if line is None:
        line = rv.product_name
    if line != rv.product_name:
        fms = ""
        if report.version >= 3:
            family, model, _ = cpuid_fms(report.cpuid1eax_fms)
            fms = f" (CPUID family {family:02x}h model {model:02x}h)"
        raise checks.stop(
            "PRODUCT",
            f"report is from product line {line}{fms}, the reference value is for "
            f"{rv.product_name}",
        )

    # D. Signer and endorsement key.
    try:
        signer = SignerInfo.from_int(report.signer_info)
    except EvidenceError as exc:
        raise checks.stop("SIGNER_INFO", str(exc)) from None
    if signer.signing_key == SIGNER_NONE:
        raise checks.stop("SIGNER_INFO", "report is not signed (signing key: none)")
    if signer.signing_key == SIGNER_VLEK:
        raise checks.stop(
            "ENDORSEMENT_KEY",
            "VLEK-signed reports are not accepted (no ASVK is trusted, as in Contrast)",
        )
    vcek_bytes = chain.vcek_cert if chain is not None else b""
    if not vcek_bytes:
        vcek_bytes = _fetch_vcek(report, line, checks, certificates)

    verification = _report_core(report, vcek_bytes, checks, trusted_roots, now, line)

    # G. Revocation of the ASK (recorded; later checks still run and are reported).
    _check_revocation(verification.root, line, extras.get(CRL_EXTRA_KEY), checks, certificates, now)

    # I. Claims against the reference value. J. Allowed chip IDs.
    _check_claims(report, rv, expected_report_data, checks)
    if rv.allowed_chip_ids:
        allowed = [hex_bytes(c, 64) for c in rv.allowed_chip_ids]
        if report.chip_id not in allowed:
            checks.fail(
                "ALLOWED_CHIP_IDS",
                f"chip {report.chip_id.hex()} is not in the manifest's AllowedChipIDs "
                f"({len(allowed)} entries)",
            )
    return verification


def _fetch_vcek(
    report: SnpReport, line: str, checks: Checks, certificates: CertificateSource | None
) -> bytes:
    tcb = TcbParts.from_int(report.reported_tcb)
    if len(report.chip_id) != 64 or not any(report.chip_id):
        raise checks.stop(
            "CERTIFICATES", "the evidence has no VCEK and the report's CHIP_ID is masked"
        )
    if certificates is None:
        raise checks.stop(
            "CERTIFICATES",
            "the evidence has no VCEK and no certificate source was given to fetch it",
        )
    try:
        return certificates.vcek(line, report.chip_id, tcb)
    except Exception as exc:
        raise checks.stop(
            "CERTIFICATES",
            f"the evidence has no VCEK and fetching it failed: {exc}",
            transient=isinstance(exc, CertificateFetchError),
        ) from None


def _core_report_checks(
    report: bytes | SnpReport,
    vcek: bytes,
    checks: Checks,
    trusted_roots: Sequence[TrustedRoot],
    now: datetime,
    product_line: str | None,
) -> SnpVerification:
    if isinstance(report, bytes):
        try:
            parsed = SnpReport.from_abi_bytes(report)
        except EvidenceError as exc:
            raise checks.stop("REPORT", str(exc)) from None
    else:
        parsed = report
    try:
        signer = SignerInfo.from_int(parsed.signer_info)
    except EvidenceError as exc:
        raise checks.stop("SIGNER_INFO", str(exc)) from None
    if signer.signing_key != SIGNER_VCEK:
        raise checks.stop(
            "SIGNER_INFO", f"report is signed by {signer.signing_key_name}, not a VCEK"
        )
    line = parsed.product_line() or product_line
    if line is None:
        try:
            line = product_line_of_product_name(kds_extensions(load_certificate(vcek)).product_name)
        except EvidenceError as exc:
            raise checks.stop("KDS_EXTENSIONS", str(exc)) from None
    return _report_core(parsed, vcek, checks, trusted_roots, now, line)


def _report_core(
    report: SnpReport,
    vcek_bytes: bytes,
    checks: Checks,
    trusted_roots: Sequence[TrustedRoot],
    now: datetime,
    line: str,
) -> SnpVerification:
    """E, F, H and the rv-independent claims (TCB relations, firmware, chip id)."""
    vcek_der, vcek, extensions = _check_endorsement_key(report, vcek_bytes, line, checks)
    root = _check_chain(vcek, vcek_der, line, trusted_roots, now, checks)
    raw = _check_report_signature(report, vcek, checks)

    current = TcbParts.from_int(report.current_tcb)
    committed = TcbParts.from_int(report.committed_tcb)
    reported = TcbParts.from_int(report.reported_tcb)
    if not committed.le(current):
        checks.fail(
            "COMMITTED_TCB",
            f"{committed} is above CURRENT_TCB {current} ({', '.join(committed.above(current))})",
        )
    if reported != extensions.tcb:
        checks.fail("REPORTED_TCB", f"{reported} does not equal the VCEK's TCB {extensions.tcb}")
    if not extensions.tcb.le(current):
        checks.fail(
            "VCEK_TCB",
            f"{extensions.tcb} is above CURRENT_TCB {current} "
            f"({', '.join(extensions.tcb.above(current))})",
        )
    if report.committed_build > report.current_build or (
        report.committed_major,
        report.committed_minor,
    ) > (report.current_major, report.current_minor):
        checks.fail(
            "FIRMWARE_VERSION",
            f"committed firmware {report.committed_major}.{report.committed_minor} build "
            f"{report.committed_build} is above current {report.current_major}."
            f"{report.current_minor} build {report.current_build}",
        )
    if any(report.chip_id) and report.chip_id != extensions.hwid:
        hwid = extensions.hwid.hex() if extensions.hwid is not None else "none"
        checks.fail("CHIP_ID", f"{report.chip_id.hex()} does not equal the VCEK's HWID {hwid}")
    return SnpVerification(
        report=report,
        raw_report=raw,
        vcek=vcek,
        extensions=extensions,
        product_line=line,
        root=root,
    )


def _check_endorsement_key(
    report: SnpReport, vcek_bytes: bytes, line: str, checks: Checks
) -> tuple[bytes, x509.Certificate, KdsExtensions]:
    """§3 E: the VCEK's form, key, subject and KDS extensions."""
    try:
        vcek_der = certificate_der(vcek_bytes)
        vcek = load_certificate(vcek_der)
    except EvidenceError as exc:
        raise checks.stop("ENDORSEMENT_KEY", f"cannot parse the VCEK certificate: {exc}") from None
    problems: list[str] = []
    if vcek.version != x509.Version.v3:
        problems.append(f"version {vcek.version.name}, expected v3")
    algorithm_problem = amd_signature_problem(vcek)
    if algorithm_problem is not None:
        problems.append(algorithm_problem)
    try:
        key = certificate_public_key(vcek, "VCEK")
    except EvidenceError as exc:
        problems.append(str(exc))
    else:
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
            key.curve, ec.SECP384R1
        ):
            problems.append("public key is not ECDSA P-384")
    problems.extend(f"subject {p}" for p in amd_name_problems(vcek.subject, "SEV-VCEK"))
    if problems:
        raise checks.stop("ENDORSEMENT_KEY", "VCEK: " + "; ".join(problems))
    try:
        extensions = kds_extensions(vcek)
    except EvidenceError as exc:
        raise checks.stop("KDS_EXTENSIONS", f"VCEK: {exc}") from None
    if extensions.hwid is None or len(extensions.hwid) != 64:
        raise checks.stop("KDS_EXTENSIONS", "VCEK has no 64-byte HWID extension")
    if extensions.csp_id is not None:
        raise checks.stop("KDS_EXTENSIONS", f"VCEK has a CSP_ID extension ({extensions.csp_id})")
    if report.version < 3:
        # go-sev-guest checks the VCEK's product name only on this path.
        if extensions.product_name not in _V2_PRODUCT_NAMES:
            raise checks.stop(
                "KDS_EXTENSIONS",
                f"VCEK product name {extensions.product_name!r} is not accepted for a version 2 "
                f"report (want one of {sorted(_V2_PRODUCT_NAMES)})",
            )
        if extensions.product_line != line:
            raise checks.stop(
                "KDS_EXTENSIONS",
                f"VCEK product {extensions.product_name} does not match product line {line}",
            )
    return vcek_der, vcek, extensions


def _check_chain(
    vcek: x509.Certificate,
    vcek_der: bytes,
    line: str,
    trusted_roots: Sequence[TrustedRoot],
    now: datetime,
    checks: Checks,
) -> TrustedRoot:
    """§3 F: VCEK -> ASK -> ARK against the trusted roots of the product line, at `now`."""
    candidates = [root for root in trusted_roots if root.product_line == line]
    if not candidates:
        trusted = sorted({root.product_line for root in trusted_roots})
        raise checks.stop(
            "CHAIN", f"no trusted root for product line {line} (trusted product lines: {trusted})"
        )
    issuer_problems = amd_name_problems(vcek.issuer, f"SEV-{line}")
    if issuer_problems:
        raise checks.stop("CHAIN", "VCEK issuer " + "; ".join(issuer_problems))
    reasons: list[str] = []
    chosen: TrustedRoot | None = None
    for root in candidates:
        problems: list[str] = []
        if vcek.issuer != root.ask.subject:
            problems.append("VCEK issuer is not the ASK's subject")
        for what, signed, issuer in (
            ("VCEK by ASK", vcek, root.ask),
            ("ASK by ARK", root.ask, root.ark),
            ("ARK by itself", root.ark, root.ark),
        ):
            try:
                verify_amd_signature(signed, certificate_public_key(issuer, "issuer"))
            except EvidenceError as exc:
                problems.append(f"{what}: {exc}")
        if problems:
            reasons.append(f"{root.source or root.product_line}: " + "; ".join(problems))
            continue
        chosen = root
        break
    if chosen is None:
        raise checks.stop("CHAIN", "VCEK does not chain to a trusted root: " + " | ".join(reasons))
    try:
        constraints = chosen.ask.extensions.get_extension_for_class(x509.BasicConstraints).value
        ask_is_ca = constraints.ca
    except x509.ExtensionNotFound:
        ask_is_ca = False
    if not ask_is_ca:
        raise checks.stop("CHAIN", "the ASK is not a CA (basicConstraints)")
    expired = [
        f"{what} valid {iso(cert.not_valid_before_utc)}..{iso(cert.not_valid_after_utc)}"
        for what, cert in (("VCEK", vcek), ("ASK", chosen.ask), ("ARK", chosen.ark))
        if not certificate_valid_at(cert, now)
    ]
    if expired:
        raise checks.stop("VALIDITY", f"at {iso(now)}: " + "; ".join(expired))
    return chosen


def _check_revocation(
    root: TrustedRoot,
    line: str,
    attached: bytes | None,
    checks: Checks,
    certificates: CertificateSource | None,
    now: datetime,
) -> None:
    """§3 G: the ASK must not be listed on the ARK's CRL; no usable CRL fails."""
    try:
        ark_key = certificate_public_key(root.ark, f"ARK-{line}")
    except EvidenceError as exc:
        checks.fail("REVOCATION", f"cannot check a CRL: {exc}")
        return
    crl: x509.CertificateRevocationList | None = None
    origin = ""
    if attached:
        try:
            attached_crl = load_crl(attached)
            next_update = attached_crl.next_update_utc
            if next_update is not None and now < next_update:
                verify_amd_signature(attached_crl, ark_key)
                crl, origin = attached_crl, "attached to the evidence"
            else:
                logger.info("attached CRL expired (nextUpdate %s); fetching one", next_update)
        except EvidenceError as exc:
            logger.info("attached CRL not usable (%s); fetching one", exc)
    if crl is None:
        url = kds_crl_url(line)
        if certificates is None:
            checks.fail(
                "REVOCATION",
                f"no CRL: none usable in the evidence and no certificate source to fetch {url}",
            )
            return
        try:
            crl_der = certificates.crl(line)
        except Exception as exc:
            checks.fail(
                "REVOCATION",
                f"no CRL obtainable for {line}: {exc}",
                transient=isinstance(exc, CertificateFetchError),
            )
            return
        origin = "fetched"
        try:
            crl = load_crl(crl_der)
        except EvidenceError as exc:
            checks.fail("REVOCATION", f"the {origin} CRL does not parse: {exc}")
            return
        try:
            verify_amd_signature(crl, ark_key)
        except EvidenceError as exc:
            checks.fail(
                "REVOCATION", f"the {origin} CRL is not signed by the trusted ARK-{line}: {exc}"
            )
            return
    revoked = crl.get_revoked_certificate_by_serial_number(root.ask.serial_number)
    if revoked is not None:
        checks.fail(
            "REVOCATION",
            f"the ASK (serial 0x{root.ask.serial_number:x}) is revoked since "
            f"{iso(revoked.revocation_date_utc)} by the CRL {origin}",
        )


def _check_report_signature(report: SnpReport, vcek: x509.Certificate, checks: Checks) -> bytes:
    """§3 H: re-encode to the ABI, parse it back, verify ECDSA P-384 over 0x000..0x29F."""
    # A field the report's version lacks (mitigation vectors before version 5) sits in reserved
    # bytes: refuse it by name before the parse-back refuses the bytes.
    problems = report.version_field_problems()
    if problems:
        raise checks.stop("REPORT", "; ".join(problems))
    try:
        raw = report.to_abi_bytes()
        SnpReport.from_abi_bytes(raw)
    except EvidenceError as exc:
        raise checks.stop("REPORT", str(exc)) from None
    if report.signature_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
        raise checks.stop(
            "SIGNATURE", f"SIGNATURE_ALGO is {report.signature_algo}, expected 1 (ECDSA P-384)"
        )
    if any(report.signature[144:]):
        raise checks.stop("SIGNATURE", "reserved bytes after R and S are not zero")
    r, s = report.signature_rs()
    try:
        key = certificate_public_key(vcek, "VCEK")
    except EvidenceError as exc:
        raise checks.stop("SIGNATURE", str(exc)) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise checks.stop("SIGNATURE", "the VCEK key is not an ECDSA key")
    try:
        key.verify(
            encode_dss_signature(r, s),
            raw[:SIGNED_REPORT_SIZE],
            ec.ECDSA(hashes.SHA384()),
        )
    except (InvalidSignature, ValueError):
        raise checks.stop(
            "SIGNATURE",
            f"report signature does not verify with the VCEK of chip "
            f"{report.chip_id.hex()[:16]}...",
        ) from None
    return raw


def _check_claims(
    report: SnpReport,
    rv: SnpReferenceValues,
    expected_report_data: bytes,
    checks: Checks,
) -> None:
    """§3 I: go-sev-guest `validate.SnpAttestation` with Contrast's options."""
    # Guest policy (already known to parse: the signature check parsed the report).
    policy = GuestPolicy.from_int(report.policy)
    required = rv.guest_policy
    if (required.abi_major, required.abi_minor) > (policy.abi_major, policy.abi_minor):
        checks.fail(
            "GUEST_POLICY",
            f"required ABI version {required.abi_major}.{required.abi_minor} is greater than the "
            f"report's {policy.abi_major}.{policy.abi_minor}",
        )
    for name, _, json_name in GuestPolicy._FLAGS:
        has, wants = getattr(policy, name), getattr(required, name)
        if name in ("migrate_ma", "debug", "smt", "cxl_allowed"):
            if has and not wants:
                checks.fail(
                    "GUEST_POLICY",
                    f"report policy 0x{report.policy:x} allows {json_name}, which the reference "
                    "value does not permit",
                )
        elif wants and not has:
            checks.fail(
                "GUEST_POLICY",
                f"report policy 0x{report.policy:x} lacks {json_name}, which the reference value "
                "requires",
            )

    # Verbatim fields.
    if report.report_data != expected_report_data:
        checks.fail(
            "REPORT_DATA",
            f"{report.report_data.hex()} does not equal the expected "
            f"{expected_report_data.hex()} (nonce, manifest history, root CA and mesh CA)",
        )
    measurement = hex_bytes(rv.trusted_measurement, 48) or b""
    if report.measurement != measurement:
        checks.fail(
            "MEASUREMENT",
            f"{report.measurement.hex()} does not equal TrustedMeasurement "
            f"{rv.trusted_measurement.lower()}",
        )

    # TCB against the reference value's minimum (also the minimum launch TCB in Contrast).
    minimum = rv.minimum_tcb.parts()
    launch = TcbParts.from_int(report.launch_tcb)
    reported = TcbParts.from_int(report.reported_tcb)
    if launch.below(minimum):
        checks.fail("LAUNCH_TCB", ", ".join(launch.below(minimum)))
    if reported.below(minimum):
        checks.fail("REPORTED_TCB", ", ".join(reported.below(minimum)))

    # Platform info.
    try:
        platform = PlatformInfo.from_int(report.platform_info)
    except EvidenceError as exc:
        checks.fail("PLATFORM_INFO", str(exc))
    else:
        allowed = rv.platform_info
        for name, _, json_name in PlatformInfo._FLAGS:
            has, wants = getattr(platform, name), getattr(allowed, name)
            if name in ("smt_enabled", "tsme_enabled", "tio_enabled"):
                if has and not wants:
                    checks.fail(
                        "PLATFORM_INFO",
                        f"0x{report.platform_info:x} has {json_name}, which the reference value "
                        "does not permit",
                    )
            elif wants and not has:
                checks.fail(
                    "PLATFORM_INFO",
                    f"0x{report.platform_info:x} lacks {json_name}, which the reference value "
                    "requires",
                )

    # ID block: Contrast trusts no author key, so the ID key digest must be the derived one.
    trusted_id_key = id_key_digest(measurement, required.to_int()) if measurement else b""
    if report.id_key_digest != trusted_id_key:
        checks.fail(
            "ID_KEY_DIGEST",
            f"{report.id_key_digest.hex()} is not the trusted ID key digest "
            f"{trusted_id_key.hex()} (derived from TrustedMeasurement and GuestPolicy)",
        )

    # Mitigation vectors: version 5 fields, zero in older reports (whatever the protobuf says;
    # a value set there is refused, not read).
    for problem in report.version_field_problems():
        checks.fail("MITIGATION_VECTOR", problem)
    want = rv.minimum_mitigation_vector
    launch_vector, current_vector = report.mitigation_vectors()
    for what, vector in (
        ("LAUNCH_MIT_VECTOR", launch_vector),
        ("CURRENT_MIT_VECTOR", current_vector),
    ):
        if vector & want != want:
            checks.fail(
                "MITIGATION_VECTOR",
                f"{what} 0x{vector:x} lacks bits 0x{want & ~vector:x} of the minimum 0x{want:x}",
            )

    if report.vmpl != 0:
        checks.fail("VMPL", f"{report.vmpl}, expected 0")
