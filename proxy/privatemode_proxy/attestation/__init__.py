"""Attestation: verify a Contrast Coordinator's TEE evidence, as Privatemode's proxy does.

`verify_attestation` checks the evidence against the latest manifest's reference values and the
trusted roots, then requires exactly the expected manifest and returns the attested mesh CA.
Modules, one job each (docs/internals.md has the map): `_protobuf`, `_gojson`, `_x509` (formats);
`_snp`, `_amd` (SEV-SNP evidence and AMD's certificate rules); `_contrast` (response, report data,
ID key); `_manifest` (the manifest model); `_roots`, `_kds` (trust roots, AMD KDS);
`_manifest_source` (the expected manifest from the CDN, logged); `_validator` (the per-TEE seam),
`_snp_validator`, `_verifier` (the checks). The local backend's issuer shares the format modules.
"""

from ._contrast import (
    AttestationResponse,
    decode_attest_request,
    decode_attest_response,
    encode_attest_request,
    encode_attest_response,
    report_data,
    transition_digest,
)
from ._errors import (
    AttestationError,
    CheckFailure,
    CollateralUnavailableError,
    EvidenceError,
    ManifestError,
)
from ._intel import (
    IntelRoot,
    PcsCollateralCache,
    StaticTdxCollateral,
    TdxCollateral,
    TdxCollateralSource,
    intel_roots,
    parse_intel_root,
)
from ._kds import (
    CertificateFetchError,
    CertificateSource,
    CertificateUnavailableError,
    KdsCertificateCache,
    StaticCertificateSource,
)
from ._manifest import Manifest
from ._manifest_source import DEFAULT_CDN_URL, ManifestLogEntry, ManifestSource
from ._roots import TrustedRoot, amd_roots, load_trusted_root
from ._snp import SnpAttestation, SnpReport, TcbParts
from ._snp_validator import SnpVerification, verify_snp_report
from ._tdx import TdxQuote
from ._validator import TeeValidator, TeeVerification
from ._verifier import AttestationResult, verify_attestation

__all__ = [
    "DEFAULT_CDN_URL",
    "AttestationError",
    "AttestationResponse",
    "AttestationResult",
    "CertificateFetchError",
    "CertificateSource",
    "CertificateUnavailableError",
    "CheckFailure",
    "CollateralUnavailableError",
    "EvidenceError",
    "IntelRoot",
    "KdsCertificateCache",
    "Manifest",
    "ManifestError",
    "ManifestLogEntry",
    "ManifestSource",
    "PcsCollateralCache",
    "SnpAttestation",
    "SnpReport",
    "SnpVerification",
    "StaticCertificateSource",
    "StaticTdxCollateral",
    "TcbParts",
    "TdxCollateral",
    "TdxCollateralSource",
    "TdxQuote",
    "TeeValidator",
    "TeeVerification",
    "TrustedRoot",
    "amd_roots",
    "decode_attest_request",
    "decode_attest_response",
    "encode_attest_request",
    "encode_attest_response",
    "intel_roots",
    "load_trusted_root",
    "parse_intel_root",
    "report_data",
    "transition_digest",
    "verify_attestation",
    "verify_snp_report",
]
