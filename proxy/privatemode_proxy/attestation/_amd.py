"""AMD's certificate rules: names, the RSA-PSS signature policy and the KDS extensions.

What go-sev-guest requires of an ARK, ASK, VCEK and CRL beyond X.509 itself (shared/docs/
attestation.md §6), and where AMD's Key Distribution Service publishes them (one URL builder,
used by the fetcher and pinned against the vectors by the tests).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from ._errors import EvidenceError
from ._snp import TcbParts
from ._x509 import (
    TAG_IA5STRING,
    TAG_INTEGER,
    TAG_OCTET_STRING,
    der_single,
    der_uint,
    name_value,
)

KDS_BASE_URL = "https://kdsintf.amd.com"

#: AMD's subject/issuer location fields (each exactly one value).
AMD_LOCATION = (
    (NameOID.COUNTRY_NAME, "US"),
    (NameOID.LOCALITY_NAME, "Santa Clara"),
    (NameOID.STATE_OR_PROVINCE_NAME, "CA"),
    (NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
    (NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
)


def _kds_oid(suffix: str) -> x509.ObjectIdentifier:
    return x509.ObjectIdentifier(f"1.3.6.1.4.1.3704.1.{suffix}")


#: AMD KDS certificate extension OIDs (arc 1.3.6.1.4.1.3704.1).
OID_STRUCT_VERSION = _kds_oid("1")
OID_PRODUCT_NAME = _kds_oid("2")
OID_BL_SPL = _kds_oid("3.1")
OID_TEE_SPL = _kds_oid("3.2")
OID_SNP_SPL = _kds_oid("3.3")
OID_SPL4 = _kds_oid("3.4")
OID_SPL5 = _kds_oid("3.5")
OID_SPL6 = _kds_oid("3.6")
OID_SPL7 = _kds_oid("3.7")
OID_UCODE_SPL = _kds_oid("3.8")
OID_FMC_SPL = _kds_oid("3.9")
OID_HWID = _kds_oid("4")
OID_CSP_ID = _kds_oid("5")
OID_AUTHORITY_KEY_IDENTIFIER = x509.ObjectIdentifier("2.5.29.35")

#: The extensions go-sev-guest (@af1c107) accepts in an endorsement-key certificate.
KDS_KNOWN_EXTENSIONS = frozenset(
    {
        OID_STRUCT_VERSION,
        OID_PRODUCT_NAME,
        OID_BL_SPL,
        OID_TEE_SPL,
        OID_SNP_SPL,
        OID_SPL4,
        OID_SPL5,
        OID_SPL6,
        OID_SPL7,
        OID_UCODE_SPL,
        OID_HWID,
        OID_CSP_ID,
        OID_AUTHORITY_KEY_IDENTIFIER,
    }
)

#: RSASSA-PSS with SHA-384, MGF1-SHA-384, salt 48: how AMD signs ASK, VCEK and CRL.
AMD_PSS_PADDING = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


# =============================================================================================
# Names and signatures
# =============================================================================================


def amd_name_problems(name: x509.Name, common_name: str) -> list[str]:
    """How `name` differs from AMD's subject layout with CN `common_name` (empty if it doesn't)."""
    problems: list[str] = []
    for oid, expected in (*AMD_LOCATION, (NameOID.COMMON_NAME, common_name)):
        values = name_value(name, oid)
        if values != [expected]:
            label = getattr(oid, "_name", oid.dotted_string)
            problems.append(f"{label}={values or 'missing'} (want {expected!r})")
    return problems


def amd_name(common_name: str) -> x509.Name:
    """An X.509 name in AMD's layout (OU, C, L, ST, O, CN)."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def amd_signature_problem(signed: x509.Certificate | x509.CertificateRevocationList) -> str | None:
    """Why `signed` does not declare AMD's signature algorithm (None if it does).

    AMD signs with RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48 (cryptography parses the PSS
    parameters). `verify_amd_signature` then verifies with exactly those parameters.
    """
    try:
        oid = signed.signature_algorithm_oid
        digest = signed.signature_hash_algorithm
        parameters = signed.signature_algorithm_parameters
    except (ValueError, UnsupportedAlgorithm):
        return "signature algorithm does not parse"
    if (
        oid != SignatureAlgorithmOID.RSASSA_PSS
        or not isinstance(digest, hashes.SHA384)
        or parameters != AMD_PSS_PADDING
    ):
        name = getattr(oid, "_name", oid.dotted_string)
        return f"signature algorithm is {name}, not RSASSA-PSS SHA-384 (MGF1 SHA-384, salt 48)"
    return None


def verify_amd_signature(
    signed: x509.Certificate | x509.CertificateRevocationList, issuer_key: object
) -> None:
    """Check that a certificate or CRL is signed by `issuer_key` with AMD's RSA-PSS parameters.

    Raises `EvidenceError` naming what is wrong.
    """
    problem = amd_signature_problem(signed)
    if problem is not None:
        raise EvidenceError(problem)
    if not isinstance(issuer_key, rsa.RSAPublicKey):
        raise EvidenceError("issuer key is not an RSA key")
    tbs = (
        signed.tbs_certificate_bytes
        if isinstance(signed, x509.Certificate)
        else signed.tbs_certlist_bytes
    )
    try:
        issuer_key.verify(signed.signature, tbs, AMD_PSS_PADDING, hashes.SHA384())
    except InvalidSignature:
        raise EvidenceError("RSA-PSS signature does not verify") from None


# =============================================================================================
# KDS extensions and URLs
# =============================================================================================


def _ext_uint8(value: bytes, what: str) -> int:
    tlv = der_single(value, TAG_INTEGER)
    number = der_uint(value, tlv)
    if number > 255:
        raise EvidenceError(f"KDS extension {what}={number} is not a uint8")
    return number


def _ext_ia5(value: bytes, what: str) -> str:
    if not value or value[0] != TAG_IA5STRING:
        raise EvidenceError(f"KDS extension {what} is not tagged as an IA5String")
    tlv = der_single(value, TAG_IA5STRING)
    raw = value[tlv.content : tlv.end]
    if any(b > 0x7F for b in raw):
        raise EvidenceError(f"KDS extension {what} is not ASCII")
    return raw.decode("ascii")


def _ext_hwid(value: bytes, size: int) -> bytes:
    # AMD's KDS puts the raw bytes without a DER tag; accept an OCTET STRING too.
    if len(value) == size:
        return value
    tlv = der_single(value, TAG_OCTET_STRING)
    octets = value[tlv.content : tlv.end]
    if len(octets) != size:
        raise EvidenceError(f"KDS extension HWID is {len(octets)} bytes, expected {size}")
    return octets


def product_line_of_product_name(product_name: str) -> str:
    """``Milan-B0`` -> ``Milan``; ``Genoa`` -> ``Genoa``."""
    return product_name.split("-", 1)[0]


@dataclass(frozen=True)
class KdsExtensions:
    """The AMD KDS extensions of a VCEK/VLEK certificate."""

    struct_version: int
    product_name: str
    tcb: TcbParts
    hwid: bytes | None
    csp_id: str | None

    @property
    def product_line(self) -> str:
        return product_line_of_product_name(self.product_name)


def kds_extensions(cert: x509.Certificate) -> KdsExtensions:
    """Parse a VCEK/VLEK's KDS extensions (Milan/Genoa layout, as go-sev-guest @af1c107).

    Any extension other than the KDS ones and authorityKeyIdentifier is an error.
    """
    values: dict[x509.ObjectIdentifier, bytes] = {}
    for ext in cert.extensions:
        if ext.oid not in KDS_KNOWN_EXTENSIONS:
            raise EvidenceError(f"unexpected certificate extension {ext.oid.dotted_string}")
        if ext.oid == OID_AUTHORITY_KEY_IDENTIFIER:
            continue
        raw = ext.value.value if isinstance(ext.value, x509.UnrecognizedExtension) else None
        if raw is None:
            raise EvidenceError(f"extension {ext.oid.dotted_string} is not a raw KDS extension")
        values[ext.oid] = raw

    def required(oid: x509.ObjectIdentifier, what: str) -> bytes:
        if oid not in values:
            raise EvidenceError(f"KDS extension {what} ({oid.dotted_string}) is missing")
        return values[oid]

    struct_version = _ext_uint8(required(OID_STRUCT_VERSION, "structVersion"), "structVersion")
    product_name = _ext_ia5(required(OID_PRODUCT_NAME, "productName"), "productName")
    spl = {
        name: _ext_uint8(required(oid, name), name)
        for name, oid in (
            ("bl", OID_BL_SPL),
            ("tee", OID_TEE_SPL),
            ("snp", OID_SNP_SPL),
            ("spl4", OID_SPL4),
            ("spl5", OID_SPL5),
            ("spl6", OID_SPL6),
            ("spl7", OID_SPL7),
            ("ucode", OID_UCODE_SPL),
        )
    }
    for name, value in spl.items():
        if name != "ucode" and value > 127:
            raise EvidenceError(f"KDS extension {name}SPL={value} exceeds 127")
    hwid = _ext_hwid(values[OID_HWID], 64) if OID_HWID in values else None
    csp_id = _ext_ia5(values[OID_CSP_ID], "CSP_ID") if OID_CSP_ID in values else None
    if hwid is not None and csp_id is not None:
        raise EvidenceError("certificate has both HWID and CSP_ID extensions")
    return KdsExtensions(
        struct_version=struct_version,
        product_name=product_name,
        tcb=TcbParts(**spl),
        hwid=hwid,
        csp_id=csp_id,
    )


def kds_vcek_url(
    product_line: str, chip_id: bytes, tcb: TcbParts, *, base_url: str = KDS_BASE_URL
) -> str:
    """The AMD KDS URL of the VCEK for a chip at a TCB (Milan/Genoa: full 64-byte chip id)."""
    return (
        f"{base_url.rstrip('/')}/vcek/v1/{product_line}/{chip_id.hex()}"
        f"?blSPL={tcb.bl}&teeSPL={tcb.tee}&snpSPL={tcb.snp}&ucodeSPL={tcb.ucode}"
    )


def kds_crl_url(product_line: str, *, base_url: str = KDS_BASE_URL) -> str:
    """The AMD KDS URL of a product line's CRL (signed by its ARK)."""
    return f"{base_url.rstrip('/')}/vcek/v1/{product_line}/crl"
