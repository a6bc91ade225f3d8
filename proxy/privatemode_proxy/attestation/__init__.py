"""Attestation: verify a Contrast Coordinator's AMD SEV-SNP evidence, as Privatemode's proxy does.

`verify_attestation` checks the evidence against the latest manifest's reference values and the
trusted AMD roots, then requires exactly the expected manifest and returns the attested mesh CA.
`_evidence` holds the format code the local backend's issuer shares.
"""

from ._errors import AttestationError, CheckFailure
from ._evidence import (
    AttestationResponse,
    EvidenceError,
    Manifest,
    ManifestError,
    SnpAttestation,
    SnpReport,
    TcbParts,
    TrustedRoot,
    decode_attest_request,
    decode_attest_response,
    encode_attest_request,
    encode_attest_response,
    report_data,
    transition_digest,
)
from ._kds import (
    CertificateSource,
    CertificateUnavailableError,
    KdsCertificateCache,
    StaticCertificateSource,
)
from ._manifest import DEFAULT_CDN_URL, ManifestLogEntry, ManifestSource
from ._roots import amd_roots, load_trusted_root
from ._verifier import AttestationResult, SnpVerification, verify_attestation, verify_snp_report

__all__ = [
    "DEFAULT_CDN_URL",
    "AttestationError",
    "AttestationResponse",
    "AttestationResult",
    "CertificateSource",
    "CertificateUnavailableError",
    "CheckFailure",
    "EvidenceError",
    "KdsCertificateCache",
    "Manifest",
    "ManifestError",
    "ManifestLogEntry",
    "ManifestSource",
    "SnpAttestation",
    "SnpReport",
    "SnpVerification",
    "StaticCertificateSource",
    "TcbParts",
    "TrustedRoot",
    "amd_roots",
    "decode_attest_request",
    "decode_attest_response",
    "encode_attest_request",
    "encode_attest_response",
    "load_trusted_root",
    "report_data",
    "transition_digest",
    "verify_attestation",
    "verify_snp_report",
]
