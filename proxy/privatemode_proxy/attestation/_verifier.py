"""Verify a Contrast Coordinator's SEV-SNP evidence the way Privatemode's proxy does.

`verify_attestation` follows shared/docs/attestation.md §2 (Contrast v1.20 `ValidateAttestation`)
and §3 (one SNP validator per reference value), then the Privatemode layer (exactly one manifest,
byte-equal to the expected one; the mesh CA). It does no I/O: certificates missing from the
evidence come from a `CertificateSource`; trust roots and the time are parameters.

Every failure raises `AttestationError`, whose message names each failed check and the values
compared. Within one reference value, a failure that makes later checks meaningless (bad
certificate chain, bad signature) stops that reference value; otherwise all failures are
collected. The first reference value that passes wins.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ._errors import AttestationError, CheckFailure
from ._evidence import (
    CRL_EXTRA_KEY,
    SIGNATURE_ALGO_ECDSA_P384_SHA384,
    SIGNED_REPORT_SIZE,
    SIGNER_NONE,
    SIGNER_VCEK,
    SIGNER_VLEK,
    AttestationResponse,
    EvidenceError,
    GuestPolicy,
    KdsExtensions,
    Manifest,
    ManifestError,
    PlatformInfo,
    SignerInfo,
    SnpAttestation,
    SnpReferenceValues,
    SnpReport,
    TcbParts,
    TrustedRoot,
    amd_name_problems,
    certificate_der,
    certificate_public_key,
    certificate_valid_at,
    check_certificate_fields,
    cpuid_fms,
    hex_bytes,
    id_key_digest,
    is_amd_pss_algorithm,
    kds_crl_url,
    kds_extensions,
    load_certificate,
    load_crl,
    pem_blocks,
    product_line_of_product_name,
    reference_value_label,
    report_data,
    signed_parts,
    transition_digest,
    verify_amd_signature,
)
from ._kds import CertificateSource

__all__ = [
    "AttestationError",
    "AttestationResult",
    "CheckFailure",
    "SnpVerification",
    "verify_attestation",
    "verify_snp_report",
]

logger = logging.getLogger(__name__)

#: Product names a VCEK may carry when the product line comes from a v2 report's context.
_V2_PRODUCT_NAMES = frozenset(
    {"Milan-B0", "Milan-B1", "Genoa-B0", "Genoa-B1", "Genoa-B2", "Turin-B0", "Turin-B1"}
)


@dataclass(frozen=True)
class AttestationResult:
    """What was verified. Everything here is public information."""

    mesh_ca: x509.Certificate
    mesh_ca_pem: bytes
    product: str
    measurement: str
    reported_tcb: dict[str, int]
    manifest_sha256: str
    verified_at: datetime
    reference_value: str = ""
    chip_id: str = ""
    trusted_root: str = ""
    coordinator_version: str = ""

    def summary(self) -> dict[str, object]:
        """A JSON-friendly description for status pages and logs."""
        return {
            "tee": "AMD SEV-SNP",
            "product": self.product,
            "measurement": self.measurement,
            "reported_tcb": dict(self.reported_tcb),
            "manifest_sha256": self.manifest_sha256,
            "verified_at": self.verified_at.isoformat(),
            "reference_value": self.reference_value,
            "chip_id": self.chip_id,
            "trusted_root": self.trusted_root,
            "coordinator_version": self.coordinator_version,
            "mesh_ca_sha256": hashlib.sha256(
                self.mesh_ca.public_bytes(serialization.Encoding.DER)
            ).hexdigest(),
        }


@dataclass(frozen=True)
class SnpVerification:
    """The outcome of the SEV-SNP checks for one report."""

    report: SnpReport
    raw_report: bytes
    vcek: x509.Certificate
    extensions: KdsExtensions
    product_line: str
    root: TrustedRoot


class _Stop(Exception):
    """Stops checking one reference value (the failures are already recorded)."""


class _Checks:
    """Failures recorded while checking one reference value (or the core report checks)."""

    def __init__(self, reference: str | None) -> None:
        self.reference = reference
        self.failures: list[CheckFailure] = []

    def fail(self, check: str, message: str) -> None:
        self.failures.append(CheckFailure(check, f"{check} {message}", self.reference))

    def stop(self, check: str, message: str) -> _Stop:
        self.fail(check, message)
        return _Stop()


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _short(data: bytes) -> str:
    return data.hex()


# =============================================================================================
# Public entry points
# =============================================================================================


def verify_attestation(
    nonce: bytes,
    attestation_doc: bytes,
    *,
    expected_manifest: bytes,
    trusted_roots: Sequence[TrustedRoot],
    now: datetime | None = None,
    certificates: CertificateSource | None = None,
) -> AttestationResult:
    """Verify a Contrast `AttestationResponse` (the bytes inside Privatemode's
    ``{"AttestationDoc": ...}``) for `nonce`, and return the attested mesh CA.

    `trusted_roots` are the only ASK/ARK pairs trusted (e.g. `amd_roots()`); `certificates`
    supplies a VCEK or CRL the evidence lacks (None: nothing is fetched, so evidence without a
    usable CRL fails, as Contrast fails closed).
    """
    try:
        return _verify_attestation(
            nonce,
            attestation_doc,
            expected_manifest=expected_manifest,
            trusted_roots=trusted_roots,
            now=_now(now),
            certificates=certificates,
        )
    except AttestationError:
        raise
    except Exception as exc:  # fail closed on anything unforeseen, with a clear type
        logger.debug("unexpected error while verifying attestation", exc_info=True)
        raise AttestationError.single(
            "INTERNAL", f"INTERNAL unexpected {type(exc).__name__} while verifying: {exc}"
        ) from exc


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
    checks = _Checks(None)
    try:
        try:
            result = _core_report_checks(
                report, vcek, checks, tuple(trusted_roots), _now(now), product_line
            )
        except _Stop:
            result = None
    except Exception as exc:
        raise AttestationError.single(
            "INTERNAL", f"INTERNAL unexpected {type(exc).__name__} while verifying: {exc}"
        ) from exc
    if checks.failures or result is None:
        raise AttestationError(
            "SEV-SNP report rejected: " + _describe(checks.failures), checks.failures
        )
    return result


# =============================================================================================
# §2: ValidateAttestation, then the Privatemode layer
# =============================================================================================


def _verify_attestation(
    nonce: bytes,
    attestation_doc: bytes,
    *,
    expected_manifest: bytes,
    trusted_roots: Sequence[TrustedRoot],
    now: datetime,
    certificates: CertificateSource | None,
) -> AttestationResult:
    def fail(check: str, message: str) -> AttestationError:
        return AttestationError.single(check, f"{check} {message}")

    if not isinstance(nonce, bytes) or len(nonce) != 32:
        size = len(nonce) if isinstance(nonce, bytes) else type(nonce).__name__
        raise fail("NONCE", f"nonce must be 32 bytes, got {size}")
    if not isinstance(attestation_doc, bytes):
        raise fail("RESPONSE", "attestation document must be bytes")
    if not isinstance(expected_manifest, bytes) or not expected_manifest:
        raise fail("EXPECTED_MANIFEST", "the expected manifest must be non-empty bytes")
    trusted_roots = tuple(trusted_roots)
    try:
        response = AttestationResponse.from_json(attestation_doc)
    except EvidenceError as exc:
        raise fail("RESPONSE", f"cannot decode the Contrast attestation response: {exc}") from None
    if not response.manifests:
        raise fail("MANIFEST", "the attestation response carries no manifest")
    try:
        manifest = Manifest.from_json(response.manifests[-1])
        manifest.validate()
    except ManifestError as exc:
        raise fail("MANIFEST", f"latest manifest: {exc}") from None

    transition = transition_digest(response.manifests)
    expected_report_data = report_data(nonce, transition, response.root_ca, response.mesh_ca)

    failures: list[CheckFailure] = []
    verification: SnpVerification | None = None
    reference = ""
    if manifest.snp:
        attestation: SnpAttestation | None = None
        decode_error = ""
        try:
            attestation = SnpAttestation.from_proto(response.raw_attestation_doc)
        except EvidenceError as exc:
            decode_error = str(exc)
        for index, rv in enumerate(manifest.snp):
            checks = _Checks(reference_value_label(index, rv))
            if attestation is None:
                checks.fail("EVIDENCE", f"cannot decode the SEV-SNP evidence: {decode_error}")
                failures.extend(checks.failures)
                continue
            try:
                verification = _validate_snp(
                    attestation, rv, checks, expected_report_data, trusted_roots, now, certificates
                )
            except _Stop:
                verification = None
            if verification is not None and not checks.failures:
                reference = checks.reference or ""
                break
            verification = None
            failures.extend(checks.failures)
    for index, _ in enumerate(manifest.tdx):
        if verification is not None:
            break
        failures.append(
            CheckFailure(
                "TDX",
                "TDX reference values are not supported by this verifier (only AMD SEV-SNP)",
                f"tdx[{index}]",
            )
        )
    if verification is None:
        raise AttestationError(
            "attestation failed: no reference value of the manifest matched: "
            + _describe(failures),
            failures,
        )

    # §2.6: the Coordinator check on HOST_DATA.
    report = verification.report
    coordinator_hashes = manifest.coordinator_policy_hashes()
    if report.host_data not in coordinator_hashes:
        raise fail(
            "HOST_DATA",
            f"{_short(report.host_data)} is not the hash of a coordinator policy of the manifest "
            f"(want one of {[h.hex() for h in coordinator_hashes]}): wrong policy hash for "
            "Coordinator",
        )

    # Privatemode: exactly one manifest, byte-equal to the expected manifest.
    if len(response.manifests) != 1:
        raise fail(
            "MANIFEST_HISTORY",
            f"expected exactly one manifest in the history, got {len(response.manifests)}",
        )
    active_sha = hashlib.sha256(response.manifests[0]).hexdigest()
    expected_sha = hashlib.sha256(expected_manifest).hexdigest()
    if response.manifests[0] != expected_manifest:
        raise fail(
            "EXPECTED_MANIFEST",
            f"active manifest sha256 {active_sha} does not match the expected manifest "
            f"sha256 {expected_sha}",
        )

    mesh_ca = _parse_mesh_ca(response.mesh_ca)
    return AttestationResult(
        mesh_ca=mesh_ca,
        mesh_ca_pem=response.mesh_ca,
        product=verification.product_line,
        measurement=report.measurement.hex(),
        reported_tcb=TcbParts.from_int(report.reported_tcb).as_dict(),
        manifest_sha256=active_sha,
        verified_at=now,
        reference_value=reference,
        chip_id=report.chip_id.hex(),
        trusted_root=verification.root.source or verification.root.product_line,
        coordinator_version=response.version,
    )


def _describe(failures: Sequence[CheckFailure]) -> str:
    """Failures grouped by reference value: ``snp[0] (Genoa): A ...; B ... | tdx[0]: C ...``."""
    groups: dict[str | None, list[str]] = {}
    for failure in failures:
        groups.setdefault(failure.reference, []).append(failure.message)
    return " | ".join(
        (f"{reference}: " if reference else "") + "; ".join(messages)
        for reference, messages in groups.items()
    )


def _parse_mesh_ca(pem: bytes) -> x509.Certificate:
    try:
        blocks = pem_blocks(pem, allow_text_between=True)
        if not blocks or blocks[0][0] != "CERTIFICATE":
            raise EvidenceError("no PEM CERTIFICATE block")
        return check_certificate_fields(x509.load_der_x509_certificate(blocks[0][1]))
    except (EvidenceError, ValueError) as exc:
        raise AttestationError.single(
            "MESH_CA", f"MESH_CA cannot parse the mesh CA certificate: {exc}"
        ) from None


# =============================================================================================
# §3: one SNP validator
# =============================================================================================


def _validate_snp(
    attestation: SnpAttestation,
    rv: SnpReferenceValues,
    checks: _Checks,
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
                f"chip {_short(report.chip_id)} is not in the manifest's AllowedChipIDs "
                f"({len(allowed)} entries)",
            )
    return verification


def _fetch_vcek(
    report: SnpReport, line: str, checks: _Checks, certificates: CertificateSource | None
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
            "CERTIFICATES", f"the evidence has no VCEK and fetching it failed: {exc}"
        ) from None


def _core_report_checks(
    report: bytes | SnpReport,
    vcek: bytes,
    checks: _Checks,
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
    checks: _Checks,
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
        checks.fail("CHIP_ID", f"{_short(report.chip_id)} does not equal the VCEK's HWID {hwid}")
    return SnpVerification(
        report=report,
        raw_report=raw,
        vcek=vcek,
        extensions=extensions,
        product_line=line,
        root=root,
    )


def _check_endorsement_key(
    report: SnpReport, vcek_bytes: bytes, line: str, checks: _Checks
) -> tuple[bytes, x509.Certificate, KdsExtensions]:
    """§3 E: the VCEK's form, key, subject and KDS extensions."""
    try:
        vcek_der = certificate_der(vcek_bytes)
        vcek = load_certificate(vcek_der)
        algorithm = signed_parts(vcek_der).algorithm
    except EvidenceError as exc:
        raise checks.stop("ENDORSEMENT_KEY", f"cannot parse the VCEK certificate: {exc}") from None
    problems: list[str] = []
    if vcek.version != x509.Version.v3:
        problems.append(f"version {vcek.version.name}, expected v3")
    if not is_amd_pss_algorithm(algorithm):
        problems.append("signature algorithm is not RSASSA-PSS SHA-384 (salt 48)")
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
    checks: _Checks,
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
        for what, signed_der, issuer in (
            ("VCEK by ASK", vcek_der, root.ask),
            ("ASK by ARK", root.ask_der, root.ark),
            ("ARK by itself", root.ark_der, root.ark),
        ):
            try:
                verify_amd_signature(signed_der, certificate_public_key(issuer, "issuer"))
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
        f"{what} valid {_iso(cert.not_valid_before_utc)}..{_iso(cert.not_valid_after_utc)}"
        for what, cert in (("VCEK", vcek), ("ASK", chosen.ask), ("ARK", chosen.ark))
        if not certificate_valid_at(cert, now)
    ]
    if expired:
        raise checks.stop("VALIDITY", f"at {_iso(now)}: " + "; ".join(expired))
    return chosen


def _check_revocation(
    root: TrustedRoot,
    line: str,
    attached: bytes | None,
    checks: _Checks,
    certificates: CertificateSource | None,
    now: datetime,
) -> None:
    """§3 G: the ASK must not be listed on the ARK's CRL; no usable CRL fails."""
    try:
        ark_key = certificate_public_key(root.ark, f"ARK-{line}")
    except EvidenceError as exc:
        checks.fail("REVOCATION", f"cannot check a CRL: {exc}")
        return
    crl_der: bytes | None = None
    origin = ""
    if attached:
        try:
            crl = load_crl(attached)
            next_update = crl.next_update_utc
            if next_update is not None and now < next_update:
                verify_amd_signature(attached, ark_key)
                crl_der, origin = attached, "attached to the evidence"
            else:
                logger.info("attached CRL expired (nextUpdate %s); fetching one", next_update)
        except EvidenceError as exc:
            logger.info("attached CRL not usable (%s); fetching one", exc)
    if crl_der is None:
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
            checks.fail("REVOCATION", f"no CRL obtainable for {line}: {exc}")
            return
        origin = "fetched"
        try:
            verify_amd_signature(crl_der, ark_key)
        except EvidenceError as exc:
            checks.fail(
                "REVOCATION", f"the {origin} CRL is not signed by the trusted ARK-{line}: {exc}"
            )
            return
    try:
        crl = load_crl(crl_der)
    except EvidenceError as exc:
        checks.fail("REVOCATION", f"the {origin} CRL does not parse: {exc}")
        return
    revoked = crl.get_revoked_certificate_by_serial_number(root.ask.serial_number)
    if revoked is not None:
        checks.fail(
            "REVOCATION",
            f"the ASK (serial 0x{root.ask.serial_number:x}) is revoked since "
            f"{_iso(revoked.revocation_date_utc)} by the CRL {origin}",
        )


def _check_report_signature(report: SnpReport, vcek: x509.Certificate, checks: _Checks) -> bytes:
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
            f"{_short(report.chip_id)[:16]}...",
        ) from None
    return raw


def _check_claims(
    report: SnpReport,
    rv: SnpReferenceValues,
    expected_report_data: bytes,
    checks: _Checks,
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
            f"{_short(report.report_data)} does not equal the expected "
            f"{_short(expected_report_data)} (nonce, manifest history, root CA and mesh CA)",
        )
    measurement = hex_bytes(rv.trusted_measurement, 48) or b""
    if report.measurement != measurement:
        checks.fail(
            "MEASUREMENT",
            f"{_short(report.measurement)} does not equal TrustedMeasurement "
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
            f"{_short(report.id_key_digest)} is not the trusted ID key digest "
            f"{_short(trusted_id_key)} (derived from TrustedMeasurement and GuestPolicy)",
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
