"""Verify a Contrast Coordinator's attestation the way Privatemode's proxy does.

`verify_attestation` follows shared/docs/attestation.md §2 (Contrast v1.20 `ValidateAttestation`):
decode the response, validate the latest manifest, compute the report data that binds the nonce
and the manifest history, hand the evidence to the TEE validators (`_validator`: SEV-SNP, then
Intel TDX; the first reference value that passes wins), run the Coordinator check, then the
Privatemode layer (exactly one manifest, byte-equal to the expected one; the mesh CA). It does no
I/O: collateral missing from the evidence comes from the validators' sources; trust roots and
the time are parameters.

Every failure raises `AttestationError`, whose message names each failed check and the values
compared; `CollateralUnavailableError` when a failure was a collateral fetch that may pass later.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ._contrast import AttestationResponse, report_data, transition_digest
from ._errors import (
    AttestationError,
    CheckFailure,
    CollateralUnavailableError,
    EvidenceError,
    ManifestError,
)
from ._intel import IntelRoot, TdxCollateralSource, intel_roots
from ._kds import CertificateSource
from ._manifest import Manifest
from ._roots import TrustedRoot
from ._snp_validator import SnpValidator
from ._tdx_validator import TdxValidator
from ._validator import TeeValidator, TeeVerification, describe, now_utc
from ._x509 import check_certificate_fields, pem_blocks

__all__ = ["AttestationResult", "verify_attestation"]

logger = logging.getLogger(__name__)


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
    tee: str = "AMD SEV-SNP"
    measurements: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """A JSON-friendly description for status pages and logs."""
        return {
            "tee": self.tee,
            "product": self.product,
            "measurement": self.measurement,
            "measurements": dict(self.measurements),
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


def verify_attestation(
    nonce: bytes,
    attestation_doc: bytes,
    *,
    expected_manifest: bytes,
    trusted_roots: Sequence[TrustedRoot],
    now: datetime | None = None,
    certificates: CertificateSource | None = None,
    tdx_roots: Sequence[IntelRoot] | None = None,
    tdx_collateral: TdxCollateralSource | None = None,
) -> AttestationResult:
    """Verify a Contrast `AttestationResponse` (the bytes inside Privatemode's
    ``{"AttestationDoc": ...}``) for `nonce`, and return the attested mesh CA.

    SEV-SNP: `trusted_roots` are the only ASK/ARK pairs trusted (e.g. `amd_roots()`);
    `certificates` supplies a VCEK or CRL the evidence lacks (None: nothing is fetched, so
    evidence without a usable CRL fails, as Contrast fails closed).
    Intel TDX: `tdx_roots` are the Intel roots trusted (None: the embedded, pinned Intel SGX Root
    CA, as in Contrast); `tdx_collateral` supplies TCB Info, QE Identity and CRLs (None: TDX
    evidence fails closed, since Contrast always checks collateral).
    """
    validators: list[TeeValidator] = [
        SnpValidator(trusted_roots, certificates),
        TdxValidator(intel_roots() if tdx_roots is None else tdx_roots, tdx_collateral),
    ]
    try:
        return _verify_attestation(
            nonce,
            attestation_doc,
            expected_manifest=expected_manifest,
            validators=validators,
            now=now_utc(now),
        )
    except AttestationError:
        raise
    except Exception as exc:  # fail closed on anything unforeseen, with a clear type
        logger.debug("unexpected error while verifying attestation", exc_info=True)
        raise AttestationError.single(
            "INTERNAL", f"INTERNAL unexpected {type(exc).__name__} while verifying: {exc}"
        ) from exc


def _verify_attestation(
    nonce: bytes,
    attestation_doc: bytes,
    *,
    expected_manifest: bytes,
    validators: Sequence[TeeValidator],
    now: datetime,
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

    # §2.5: the validators of every TEE, combined with "any": every reference value is tried,
    # whatever the response's attestation_type says (Contrast ignores it, attestation.md §1.2).
    failures: list[CheckFailure] = []
    verification: TeeVerification | None = None
    for validator in validators:
        verification, validator_failures = validator.validate(
            manifest, response.raw_attestation_doc, expected_report_data, now
        )
        failures.extend(validator_failures)
        if verification is not None:
            break
    if verification is None:
        error = (
            CollateralUnavailableError
            if any(failure.transient for failure in failures)
            else AttestationError
        )
        raise error(
            "attestation failed: no reference value of the manifest matched: " + describe(failures),
            failures,
        )

    # §2.6: the Coordinator check (HOST_DATA / MRCONFIGID[0:32]).
    coordinator_hashes = manifest.coordinator_policy_hashes()
    if verification.coordinator_policy not in coordinator_hashes:
        what = "HOST_DATA" if verification.tee == SnpValidator.tee else "MRCONFIGID"
        raise fail(
            what,
            f"{verification.coordinator_policy.hex()} is not the hash of a coordinator policy of "
            f"the manifest (want one of {[h.hex() for h in coordinator_hashes]}): wrong policy "
            "hash for Coordinator",
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
        product=verification.product,
        measurement=verification.measurement,
        reported_tcb=dict(verification.tcb),
        manifest_sha256=active_sha,
        verified_at=now,
        reference_value=verification.reference_value,
        chip_id=verification.chip_id,
        trusted_root=verification.trusted_root,
        coordinator_version=response.version,
        tee=verification.tee,
        measurements=dict(verification.measurements),
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
