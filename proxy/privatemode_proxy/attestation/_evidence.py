"""The evidence format, shared by the verifier and the local backend's issuer.

Everything here is pure: bytes in, structures out (and back). Nothing here decides whether
evidence is trustworthy; that is the verifier's job. Malformed input raises `EvidenceError`.

Sections: DER helpers and certificate loading; TCB, guest policy, platform info and signer info;
the SEV-SNP report (0x4A0 ABI bytes <-> protobuf `sevsnp.Attestation`); AMD KDS certificate
extensions; AMD trusted roots (ASK + ARK); the Contrast attestation response and the Privatemode
wrapper; transition digest and report data; the Contrast ID block and ID-key digest; the manifest.
See shared/docs/attestation.md for the formats.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
import struct
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID


class EvidenceError(ValueError):
    """Evidence, a certificate, a manifest or a response that cannot be parsed or encoded."""


# =============================================================================================
# Constants
# =============================================================================================

REPORT_SIZE = 0x4A0
SIGNED_REPORT_SIZE = 0x2A0
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1

#: `CertificateChain.extras` key under which Contrast attaches the product line's CRL (DER).
CRL_EXTRA_KEY = "00569ee4-e480-4fba-bbf4-45b629901180"

#: `attestation_type` OIDs as Go's `asn1.ObjectIdentifier` ([]int).
SNP_ATTESTATION_TYPE = (1, 3, 9901, 2, 1)
TDX_ATTESTATION_TYPE = (1, 3, 9901, 2, 2)

MILAN, GENOA, TURIN, UNKNOWN_PRODUCT = "Milan", "Genoa", "Turin", "Unknown"
#: `SevProduct.name` enum values.
SEV_PRODUCT_NAMES = {0: UNKNOWN_PRODUCT, 1: MILAN, 2: GENOA, 3: TURIN}
SEV_PRODUCT_ENUM = {name: number for number, name in SEV_PRODUCT_NAMES.items()}

#: Contrast's ID block FAMILY_ID / IMAGE_ID (v1.20); reports echo them.
CONTRAST_FAMILY_ID = b"\x01" + bytes(15)
CONTRAST_IMAGE_ID = b"\x02" + bytes(15)

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
# DER helpers
# =============================================================================================

_TAG_INTEGER = 0x02
_TAG_BIT_STRING = 0x03
_TAG_OCTET_STRING = 0x04
_TAG_NULL = 0x05
_TAG_OID = 0x06
_TAG_IA5STRING = 0x16
_TAG_SEQUENCE = 0x30

_OID_RSASSA_PSS = bytes.fromhex("2a864886f70d01010a")
_OID_MGF1 = bytes.fromhex("2a864886f70d010108")
_OID_SHA384 = bytes.fromhex("608648016503040202")


@dataclass(frozen=True)
class _Tlv:
    tag: int
    start: int  # first byte of the tag
    content: int  # first content byte
    end: int  # one past the last content byte


def _der_read(data: bytes, pos: int, limit: int) -> _Tlv:
    """Read one DER TLV at `pos`, not past `limit` (definite, minimal lengths only)."""
    if pos + 2 > limit:
        raise EvidenceError("DER: truncated element")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise EvidenceError("DER: multi-byte tags are not supported")
    first = data[pos + 1]
    content = pos + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise EvidenceError("DER: indefinite or oversized length")
        if content + count > limit:
            raise EvidenceError("DER: truncated length")
        length = int.from_bytes(data[content : content + count], "big")
        if length < 0x80 or data[content] == 0:
            raise EvidenceError("DER: non-minimal length")
        content += count
    end = content + length
    if end > limit:
        raise EvidenceError("DER: element longer than its container")
    return _Tlv(tag, pos, content, end)


def _der_children(data: bytes, parent: _Tlv) -> list[_Tlv]:
    out: list[_Tlv] = []
    pos = parent.content
    while pos < parent.end:
        tlv = _der_read(data, pos, parent.end)
        out.append(tlv)
        pos = tlv.end
    return out


def _der_single(data: bytes, tag: int) -> _Tlv:
    """The one element `data` consists of, which must have `tag`."""
    tlv = _der_read(data, 0, len(data))
    if tlv.end != len(data):
        raise EvidenceError("DER: trailing bytes")
    if tlv.tag != tag:
        raise EvidenceError(f"DER: expected tag 0x{tag:02x}, got 0x{tlv.tag:02x}")
    return tlv


@dataclass(frozen=True)
class SignedParts:
    """The three parts of a signed X.509 structure (certificate or CRL), as raw DER."""

    tbs: bytes
    algorithm: bytes
    signature: bytes


def signed_parts(der: bytes) -> SignedParts:
    """Split a certificate or CRL into to-be-signed bytes, AlgorithmIdentifier and signature."""
    outer = _der_single(der, _TAG_SEQUENCE)
    children = _der_children(der, outer)
    if len(children) != 3:
        raise EvidenceError("DER: a signed structure has three elements")
    tbs, alg, sig = children
    if tbs.tag != _TAG_SEQUENCE or alg.tag != _TAG_SEQUENCE or sig.tag != _TAG_BIT_STRING:
        raise EvidenceError("DER: malformed signed structure")
    if sig.end - sig.content < 1 or der[sig.content] != 0:
        raise EvidenceError("DER: signature bit string has unused bits")
    return SignedParts(
        tbs=der[tbs.start : tbs.end],
        algorithm=der[alg.start : alg.end],
        signature=der[sig.content + 1 : sig.end],
    )


def _is_sha384_algorithm(data: bytes, tlv: _Tlv) -> bool:
    if tlv.tag != _TAG_SEQUENCE:
        return False
    parts = _der_children(data, tlv)
    if not parts or parts[0].tag != _TAG_OID:
        return False
    if data[parts[0].content : parts[0].end] != _OID_SHA384:
        return False
    # Parameters: absent or NULL.
    return len(parts) == 1 or (
        len(parts) == 2 and parts[1].tag == _TAG_NULL and parts[1].end == parts[1].content
    )


def is_amd_pss_algorithm(algorithm_der: bytes) -> bool:
    """Whether an AlgorithmIdentifier is RSASSA-PSS / SHA-384 / MGF1-SHA-384 / salt 48."""
    try:
        alg = _der_single(algorithm_der, _TAG_SEQUENCE)
        parts = _der_children(algorithm_der, alg)
        if len(parts) != 2 or parts[0].tag != _TAG_OID or parts[1].tag != _TAG_SEQUENCE:
            return False
        if algorithm_der[parts[0].content : parts[0].end] != _OID_RSASSA_PSS:
            return False
        params = {p.tag: p for p in _der_children(algorithm_der, parts[1])}
        hash_alg, mgf, salt, trailer = (params.get(0xA0 + i) for i in range(4))
        if len(params) != len(_der_children(algorithm_der, parts[1])):
            return False
        if hash_alg is None or mgf is None or salt is None:
            return False  # the defaults (SHA-1, salt 20) are not AMD's
        (inner_hash,) = _der_children(algorithm_der, hash_alg)
        if not _is_sha384_algorithm(algorithm_der, inner_hash):
            return False
        (mgf_alg,) = _der_children(algorithm_der, mgf)
        mgf_parts = _der_children(algorithm_der, mgf_alg)
        if (
            len(mgf_parts) != 2
            or mgf_parts[0].tag != _TAG_OID
            or algorithm_der[mgf_parts[0].content : mgf_parts[0].end] != _OID_MGF1
            or not _is_sha384_algorithm(algorithm_der, mgf_parts[1])
        ):
            return False
        (salt_int,) = _der_children(algorithm_der, salt)
        if salt_int.tag != _TAG_INTEGER or _der_uint(algorithm_der, salt_int) != 48:
            return False
        if trailer is not None:
            (trailer_int,) = _der_children(algorithm_der, trailer)
            if trailer_int.tag != _TAG_INTEGER or _der_uint(algorithm_der, trailer_int) != 1:
                return False
        return True
    except (EvidenceError, ValueError):
        return False


def _der_uint(data: bytes, tlv: _Tlv) -> int:
    content = data[tlv.content : tlv.end]
    if not content:
        raise EvidenceError("DER: empty INTEGER")
    if len(content) > 1 and (
        (content[0] == 0 and content[1] < 0x80) or (content[0] == 0xFF and content[1] >= 0x80)
    ):
        raise EvidenceError("DER: non-minimal INTEGER")
    if content[0] & 0x80:
        raise EvidenceError("DER: negative INTEGER")
    return int.from_bytes(content, "big")


def verify_amd_signature(signed_der: bytes, issuer_key: object) -> None:
    """Check that a certificate or CRL is signed by `issuer_key` with AMD's RSA-PSS parameters.

    Raises `EvidenceError` naming what is wrong. Works on the original DER, so a certificate
    with serial number 0 (AMD's VCEKs) is verified over exactly the bytes AMD signed.
    """
    parts = signed_parts(signed_der)
    if not is_amd_pss_algorithm(parts.algorithm):
        raise EvidenceError("signature algorithm is not RSASSA-PSS SHA-384 (MGF1 SHA-384, salt 48)")
    if not isinstance(issuer_key, rsa.RSAPublicKey):
        raise EvidenceError("issuer key is not an RSA key")
    try:
        issuer_key.verify(parts.signature, parts.tbs, AMD_PSS_PADDING, hashes.SHA384())
    except InvalidSignature:
        raise EvidenceError("RSA-PSS signature does not verify") from None


# ---------------------------------------------------------------------------------------------
# PEM and certificate loading
# ---------------------------------------------------------------------------------------------

_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----\r?\n?", re.DOTALL)


def pem_blocks(data: bytes, *, allow_text_between: bool = False) -> list[tuple[str, bytes]]:
    """Decode the PEM blocks in `data` as (label, DER) pairs.

    Only whitespace may surround the blocks unless `allow_text_between`.
    """
    out: list[tuple[str, bytes]] = []
    pos = 0
    for match in _PEM_RE.finditer(data):
        gap = data[pos : match.start()]
        if gap.strip() and not allow_text_between:
            raise EvidenceError("PEM: unexpected text outside a PEM block")
        body = match.group(2)
        if b":" in body:
            raise EvidenceError("PEM: headers are not allowed")
        try:
            der = base64.b64decode(b"".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            raise EvidenceError("PEM: bad base64 in block") from None
        out.append((match.group(1).decode("ascii"), der))
        pos = match.end()
    if data[pos:].strip() and not allow_text_between:
        raise EvidenceError("PEM: unexpected text after the last PEM block")
    return out


def pem_encode(label: str, der: bytes) -> bytes:
    b64 = base64.b64encode(der)
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (
        f"-----BEGIN {label}-----\n".encode()
        + b"\n".join(lines)
        + f"\n-----END {label}-----\n".encode()
    )


def certificate_der(data: bytes) -> bytes:
    """A certificate given as DER or as one PEM CERTIFICATE block, returned as DER."""
    if data.lstrip().startswith(b"-----BEGIN"):
        blocks = pem_blocks(data)
        if len(blocks) != 1 or blocks[0][0] != "CERTIFICATE":
            raise EvidenceError("expected exactly one PEM CERTIFICATE block")
        return blocks[0][1]
    return data


def _with_serial_one(der: bytes) -> bytes:
    """`der` with its serial number replaced by 1 (for field access only, never for signatures)."""
    outer = _der_single(der, _TAG_SEQUENCE)
    tbs, alg, sig = _der_children(der, outer)
    items = _der_children(der, tbs)
    index = 1 if items and items[0].tag == 0xA0 else 0
    if index >= len(items) or items[index].tag != _TAG_INTEGER:
        raise EvidenceError("DER: certificate has no serial number")
    serial = items[index]
    tbs_content = der[tbs.content : serial.start] + b"\x02\x01\x01" + der[serial.end : tbs.end]
    new_tbs = _der_encode(_TAG_SEQUENCE, tbs_content)
    return _der_encode(_TAG_SEQUENCE, new_tbs + der[alg.start : alg.end] + der[sig.start : sig.end])


def _der_encode(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


#: What cryptography raises when a lazily decoded part of a certificate does not parse.
_LAZY_PARSE_ERRORS = (ValueError, x509.DuplicateExtension)


def check_certificate_fields(cert: x509.Certificate) -> x509.Certificate:
    """`cert`, once its subject, issuer, validity and extensions are known to parse.

    cryptography decodes names and extensions on first access, so a certificate that loaded
    can still raise a bare ValueError later; this reads them now and raises `EvidenceError`.
    """
    for part, label in (
        ("subject", "subject name"),
        ("issuer", "issuer name"),
        ("not_valid_before_utc", "validity period"),
        ("not_valid_after_utc", "validity period"),
        ("extensions", "extension"),
    ):
        try:
            getattr(cert, part)
        except _LAZY_PARSE_ERRORS:
            raise EvidenceError(f"certificate has a malformed {label}") from None
    return cert


def certificate_public_key(cert: x509.Certificate, what: str) -> Any:
    """`cert.public_key()`, with a key that does not parse (or is of an unknown algorithm) as
    an `EvidenceError` naming `what`."""
    try:
        return cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise EvidenceError(f"{what} public key does not parse") from None


def load_certificate(data: bytes) -> x509.Certificate:
    """Parse a DER or PEM certificate, accepting serial number 0 (as AMD's VCEKs have).

    cryptography warns about non-positive serials and may refuse them in a future release; in
    that case the certificate is parsed with its serial replaced, which is safe because the
    verifier checks signatures over the original DER (`verify_amd_signature`). The names,
    validity and extensions are decoded here (`check_certificate_fields`), so reading them
    later cannot fail.
    """
    der = certificate_der(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        first_error = exc
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                cert = x509.load_der_x509_certificate(_with_serial_one(der))
        except ValueError:  # EvidenceError included
            raise EvidenceError(f"not a valid X.509 certificate: {first_error}") from None
    return check_certificate_fields(cert)


def load_crl(der: bytes) -> x509.CertificateRevocationList:
    """Parse a DER CRL, its lazily decoded parts (issuer, dates, extensions, entries) included."""
    try:
        crl = x509.load_der_x509_crl(der)
    except ValueError as exc:
        raise EvidenceError(f"not a valid DER CRL: {exc}") from None
    try:
        for part in ("issuer", "last_update_utc", "next_update_utc", "extensions"):
            getattr(crl, part)
    except _LAZY_PARSE_ERRORS:
        raise EvidenceError(f"not a valid DER CRL: its {part} does not parse") from None
    try:
        for entry in crl:
            for part in ("serial_number", "revocation_date_utc", "extensions"):
                getattr(entry, part)
    except _LAZY_PARSE_ERRORS:
        raise EvidenceError(
            "not a valid DER CRL: a revoked-certificate entry does not parse"
        ) from None
    return crl


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def certificate_valid_at(cert: x509.Certificate, now: datetime) -> bool:
    now = _utc(now)
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def name_value(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(attr.value) for attr in name.get_attributes_for_oid(oid)]


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


# =============================================================================================
# TCB, guest policy, platform info, signer info, CPUID
# =============================================================================================


@dataclass(frozen=True, order=False)
class TcbParts:
    """A Milan/Genoa TCB_VERSION: bytes 0..7 = BL, TEE, SPL4..7 (reserved), SNP, microcode."""

    bl: int = 0
    tee: int = 0
    snp: int = 0
    ucode: int = 0
    spl4: int = 0
    spl5: int = 0
    spl6: int = 0
    spl7: int = 0

    _ORDER = ("bl", "tee", "snp", "ucode", "spl4", "spl5", "spl6", "spl7")

    def __post_init__(self) -> None:
        for name in self._ORDER:
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 255:
                raise EvidenceError(f"TCB part {name}={value!r} is not a byte")

    @classmethod
    def from_int(cls, value: int) -> TcbParts:
        b = value.to_bytes(8, "little")
        return cls(
            bl=b[0], tee=b[1], spl4=b[2], spl5=b[3], spl6=b[4], spl7=b[5], snp=b[6], ucode=b[7]
        )

    def to_int(self) -> int:
        layout = (
            self.bl,
            self.tee,
            self.spl4,
            self.spl5,
            self.spl6,
            self.spl7,
            self.snp,
            self.ucode,
        )
        return int.from_bytes(bytes(layout), "little")

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self._ORDER}

    def below(self, minimum: TcbParts) -> list[str]:
        """Components of self below `minimum`, e.g. ``["snp=25 below minimum 28"]``."""
        return [
            f"{name}={getattr(self, name)} below minimum {getattr(minimum, name)}"
            for name in self._ORDER
            if getattr(self, name) < getattr(minimum, name)
        ]

    def above(self, maximum: TcbParts) -> list[str]:
        return [
            f"{name}={getattr(self, name)} above {getattr(maximum, name)}"
            for name in self._ORDER
            if getattr(self, name) > getattr(maximum, name)
        ]

    def le(self, other: TcbParts) -> bool:
        return not self.above(other)

    def __str__(self) -> str:
        text = f"bl={self.bl} tee={self.tee} snp={self.snp} ucode={self.ucode}"
        reserved = (self.spl4, self.spl5, self.spl6, self.spl7)
        if any(reserved):
            text += " spl4..7={},{},{},{}".format(*reserved)
        return text


@dataclass(frozen=True)
class GuestPolicy:
    """SNP guest POLICY (go-sev-guest `abi.SnpPolicy`), also the manifest's `GuestPolicy`."""

    abi_minor: int = 0
    abi_major: int = 0
    smt: bool = False
    migrate_ma: bool = False
    debug: bool = False
    single_socket: bool = False
    cxl_allowed: bool = False
    mem_aes_256_xts: bool = False
    rapl_dis: bool = False
    ciphertext_hiding_dram: bool = False
    page_swap_disable: bool = False

    # (attribute, bit, manifest JSON name)
    _FLAGS = (
        ("smt", 16, "SMT"),
        ("migrate_ma", 18, "MigrateMA"),
        ("debug", 19, "Debug"),
        ("single_socket", 20, "SingleSocket"),
        ("cxl_allowed", 21, "CXLAllowed"),
        ("mem_aes_256_xts", 22, "MemAES256XTS"),
        ("rapl_dis", 23, "RAPLDis"),
        ("ciphertext_hiding_dram", 24, "CipherTextHidingDRAM"),
        ("page_swap_disable", 25, "PageSwapDisable"),
    )

    @classmethod
    def from_int(cls, value: int) -> GuestPolicy:
        """Parse a report's POLICY (go-sev-guest `ParseSnpPolicy`)."""
        if not 0 <= value < 1 << 64:
            raise EvidenceError(f"policy 0x{value:x} is not a u64")
        if not value & (1 << 17):
            raise EvidenceError(f"policy 0x{value:x}: reserved bit 17 must be 1")
        if value >> 26:
            raise EvidenceError(f"policy 0x{value:x}: bits 26..63 must be 0")
        flags = {name: bool(value >> bit & 1) for name, bit, _ in cls._FLAGS}
        return cls(abi_minor=value & 0xFF, abi_major=value >> 8 & 0xFF, **flags)

    def to_int(self) -> int:
        """go-sev-guest `SnpPolicyToBytes`: ABI minor/major, bit 17, and the flag bits."""
        value = (self.abi_minor & 0xFF) | (self.abi_major & 0xFF) << 8 | 1 << 17
        for name, bit, _ in self._FLAGS:
            if getattr(self, name):
                value |= 1 << bit
        return value

    def to_json_obj(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ABIMinor": self.abi_minor, "ABIMajor": self.abi_major}
        for name, _, json_name in self._FLAGS:
            out[json_name] = getattr(self, name)
        return out


@dataclass(frozen=True)
class PlatformInfo:
    """PLATFORM_INFO (go-sev-guest `abi.SnpPlatformInfo`), also the manifest's `PlatformInfo`."""

    smt_enabled: bool = False
    tsme_enabled: bool = False
    ecc_enabled: bool = False
    rapl_disabled: bool = False
    ciphertext_hiding_dram_enabled: bool = False
    alias_check_complete: bool = False
    tio_enabled: bool = False

    _FLAGS = (
        ("smt_enabled", 0, "SMTEnabled"),
        ("tsme_enabled", 1, "TSMEEnabled"),
        ("ecc_enabled", 2, "ECCEnabled"),
        ("rapl_disabled", 3, "RAPLDisabled"),
        ("ciphertext_hiding_dram_enabled", 4, "CiphertextHidingDRAMEnabled"),
        ("alias_check_complete", 5, "AliasCheckComplete"),
        ("tio_enabled", 7, "TIOEnabled"),
    )

    @classmethod
    def from_int(cls, value: int) -> PlatformInfo:
        if value & (1 << 6) or value >> 8:
            raise EvidenceError(f"platform info 0x{value:x} has reserved bits set (bit 6 or >7)")
        return cls(**{name: bool(value >> bit & 1) for name, bit, _ in cls._FLAGS})

    def to_int(self) -> int:
        value = 0
        for name, bit, _ in self._FLAGS:
            if getattr(self, name):
                value |= 1 << bit
        return value

    def to_json_obj(self) -> dict[str, Any]:
        return {json_name: getattr(self, name) for name, _, json_name in self._FLAGS}


SIGNER_VCEK, SIGNER_VLEK, SIGNER_NONE = 0, 1, 7


@dataclass(frozen=True)
class SignerInfo:
    """The report's signer info word at 0x48."""

    author_key_en: bool
    mask_chip_key: bool
    signing_key: int  # SIGNER_VCEK, SIGNER_VLEK or SIGNER_NONE

    @classmethod
    def from_int(cls, value: int) -> SignerInfo:
        if value >> 5:
            raise EvidenceError(f"signer info 0x{value:x}: bits 5..31 must be 0")
        key = value >> 2 & 7
        if key not in (SIGNER_VCEK, SIGNER_VLEK, SIGNER_NONE):
            raise EvidenceError(f"signer info 0x{value:x}: reserved signing key {key}")
        return cls(author_key_en=bool(value & 1), mask_chip_key=bool(value & 2), signing_key=key)

    def to_int(self) -> int:
        return int(self.author_key_en) | int(self.mask_chip_key) << 1 | self.signing_key << 2

    @property
    def signing_key_name(self) -> str:
        return {SIGNER_VCEK: "VCEK", SIGNER_VLEK: "VLEK", SIGNER_NONE: "none"}[self.signing_key]


def cpuid_fms(cpuid1eax: int) -> tuple[int, int, int]:
    """(family, model, stepping) from a CPUID[1].EAX value."""
    family = (cpuid1eax >> 20 & 0xFF) + (cpuid1eax >> 8 & 0xF)
    model = (cpuid1eax >> 16 & 0xF) << 4 | (cpuid1eax >> 4 & 0xF)
    return family, model, cpuid1eax & 0xF


def cpuid1eax_from_fms(family: int, model: int, stepping: int) -> int:
    """CPUID[1].EAX for a family/model/stepping (go-sev-guest `FmsToCpuid1Eax`)."""
    ext_family = 0
    if family > 0xF:
        ext_family, family = family - 0xF, 0xF
    return (
        (ext_family & 0xFF) << 20
        | (model >> 4 & 0xF) << 16
        | (family & 0xF) << 8
        | (model & 0xF) << 4
        | (stepping & 0xF)
    )


#: CPUID[1].EAX of a Genoa B1 part (family 19h, model 11h, stepping 1).
GENOA_CPUID1EAX = cpuid1eax_from_fms(0x19, 0x11, 0x01)


def product_line_from_cpuid(cpuid1eax: int) -> str:
    family, model, _ = cpuid_fms(cpuid1eax)
    if family == 0x19 and model == 0x01:
        return MILAN
    if family == 0x19 and model == 0x11:
        return GENOA
    if family == 0x1A and model == 0x02:
        return TURIN
    return UNKNOWN_PRODUCT


# =============================================================================================
# Protobuf wire format (proto3, hand-written: only what sevsnp.Attestation needs)
# =============================================================================================

_WT_VARINT, _WT_FIXED64, _WT_LEN, _WT_FIXED32 = 0, 1, 2, 5


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise EvidenceError("protobuf: truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift >= 70:
            raise EvidenceError("protobuf: varint longer than 10 bytes")
    if result >= 1 << 64:
        raise EvidenceError("protobuf: varint exceeds 64 bits")
    return result, pos


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) for each field in a message, in order."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if not 1 <= number < 1 << 29:
            raise EvidenceError(f"protobuf: invalid field number {number}")
        value: int | bytes
        if wire == _WT_VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire == _WT_FIXED64:
            if pos + 8 > len(buf):
                raise EvidenceError("protobuf: truncated fixed64")
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == _WT_LEN:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise EvidenceError(f"protobuf: field {number} is truncated")
            value, pos = buf[pos : pos + length], pos + length
        elif wire == _WT_FIXED32:
            if pos + 4 > len(buf):
                raise EvidenceError("protobuf: truncated fixed32")
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise EvidenceError(f"protobuf: unsupported wire type {wire} (field {number})")
        yield number, wire, value


def _expect_int(number: int, wire: int, value: int | bytes, bits: int, what: str) -> int:
    if wire != _WT_VARINT or not isinstance(value, int):
        raise EvidenceError(f"protobuf: {what} (field {number}) must be a varint")
    if value >= 1 << bits:
        raise EvidenceError(f"protobuf: {what} (field {number}) exceeds {bits} bits")
    return value


def _expect_bytes(number: int, wire: int, value: int | bytes, what: str) -> bytes:
    if wire != _WT_LEN or not isinstance(value, bytes):
        raise EvidenceError(f"protobuf: {what} (field {number}) must be length-delimited")
    return value


def _write_varint(value: int) -> bytes:
    if value < 0:
        value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _write_varint(number << 3 | wire)


def _enc_uint(number: int, value: int) -> bytes:
    return _key(number, _WT_VARINT) + _write_varint(value) if value else b""


def _enc_bytes(number: int, value: bytes, *, always: bool = False) -> bytes:
    if not value and not always:
        return b""
    return _key(number, _WT_LEN) + _write_varint(len(value)) + value


# =============================================================================================
# The SEV-SNP report
# =============================================================================================

# (attribute, proto field, ABI offset, ABI size in bytes); all little-endian in the ABI.
_REPORT_INTS: tuple[tuple[str, int, int, int], ...] = (
    ("version", 1, 0x000, 4),
    ("guest_svn", 2, 0x004, 4),
    ("policy", 3, 0x008, 8),
    ("vmpl", 6, 0x030, 4),
    ("signature_algo", 7, 0x034, 4),
    ("current_tcb", 8, 0x038, 8),
    ("platform_info", 9, 0x040, 8),
    ("signer_info", 10, 0x048, 4),
    ("reported_tcb", 18, 0x180, 8),
    ("committed_tcb", 20, 0x1E0, 8),
    ("current_build", 21, 0x1E8, 1),
    ("current_minor", 22, 0x1E9, 1),
    ("current_major", 23, 0x1EA, 1),
    ("committed_build", 24, 0x1EC, 1),
    ("committed_minor", 25, 0x1ED, 1),
    ("committed_major", 26, 0x1EE, 1),
    ("launch_tcb", 27, 0x1F0, 8),
    ("launch_mit_vector", 30, 0x1F8, 8),
    ("current_mit_vector", 31, 0x200, 8),
)
_REPORT_BYTES: tuple[tuple[str, int, int, int], ...] = (
    ("family_id", 4, 0x010, 16),
    ("image_id", 5, 0x020, 16),
    ("report_data", 11, 0x050, 64),
    ("measurement", 12, 0x090, 48),
    ("host_data", 13, 0x0C0, 32),
    ("id_key_digest", 14, 0x0E0, 48),
    ("author_key_digest", 15, 0x110, 48),
    ("report_id", 16, 0x140, 32),
    ("report_id_ma", 17, 0x160, 32),
    ("chip_id", 19, 0x1A0, 64),
    ("signature", 28, 0x2A0, 512),
)
_CPUID_FIELD = 29
_CPUID_OFFSET = 0x188
#: The first report version with CPUID bytes at 0x188..0x18A.
CPUID_REPORT_VERSION = 3
#: The first report version with mitigation vectors; before it, 0x1F8..0x207 is reserved.
MITIGATION_VECTOR_REPORT_VERSION = 5
#: (attribute, ABI name, offset) of the version-5 mitigation vectors (8 bytes each).
_MITIGATION_VECTORS = (
    ("launch_mit_vector", "LAUNCH_MIT_VECTOR", 0x1F8),
    ("current_mit_vector", "CURRENT_MIT_VECTOR", 0x200),
)
# Reserved (must-be-zero) ABI ranges in every version. Older versions reserve more: the CPUID
# bytes before version 3, the mitigation vectors before version 5 (see `from_abi_bytes`).
_RESERVED = ((0x04C, 0x050), (0x18B, 0x1A0), (0x1EB, 0x1EC), (0x1EF, 0x1F0), (0x208, 0x2A0))
_INT_BY_FIELD = {number: (name, size) for name, number, _, size in _REPORT_INTS}
_BYTES_BY_FIELD = {number: (name, size) for name, number, _, size in _REPORT_BYTES}


@dataclass(frozen=True)
class SnpReport:
    """An SEV-SNP ATTESTATION_REPORT, field for field as in go-sev-guest's `sevsnp.Report`."""

    version: int = 0
    guest_svn: int = 0
    policy: int = 0
    family_id: bytes = b""
    image_id: bytes = b""
    vmpl: int = 0
    signature_algo: int = 0
    current_tcb: int = 0
    platform_info: int = 0
    signer_info: int = 0
    report_data: bytes = b""
    measurement: bytes = b""
    host_data: bytes = b""
    id_key_digest: bytes = b""
    author_key_digest: bytes = b""
    report_id: bytes = b""
    report_id_ma: bytes = b""
    reported_tcb: int = 0
    chip_id: bytes = b""
    committed_tcb: int = 0
    current_build: int = 0
    current_minor: int = 0
    current_major: int = 0
    committed_build: int = 0
    committed_minor: int = 0
    committed_major: int = 0
    launch_tcb: int = 0
    signature: bytes = b""
    cpuid1eax_fms: int = 0
    launch_mit_vector: int = 0
    current_mit_vector: int = 0

    # -- raw ABI bytes ------------------------------------------------------------------------

    @classmethod
    def from_abi_bytes(cls, raw: bytes) -> SnpReport:
        """Parse a raw 0x4A0-byte report (go-sev-guest `ReportToProto`; reserved bytes zero)."""
        if len(raw) != REPORT_SIZE:
            raise EvidenceError(f"report is {len(raw)} bytes, expected {REPORT_SIZE}")
        values: dict[str, Any] = {}
        for name, _, offset, size in _REPORT_INTS:
            values[name] = int.from_bytes(raw[offset : offset + size], "little")
        for name, _, offset, size in _REPORT_BYTES:
            values[name] = bytes(raw[offset : offset + size])
        version = values["version"]
        if not 2 <= version <= 5:
            raise EvidenceError(f"report version {version} is not supported (2..5)")
        reserved = list(_RESERVED)
        if version < CPUID_REPORT_VERSION:
            reserved.append((_CPUID_OFFSET, _CPUID_OFFSET + 3))
        else:
            family, model, stepping = raw[_CPUID_OFFSET : _CPUID_OFFSET + 3]
            values["cpuid1eax_fms"] = cpuid1eax_from_fms(family, model, stepping)
        for start, end in reserved:
            if any(raw[start:end]):
                raise EvidenceError(
                    f"report reserved bytes 0x{start:03x}..0x{end:03x} are not zero"
                )
        if version < MITIGATION_VECTOR_REPORT_VERSION:
            # Reserved before version 5: never read them as mitigation vectors.
            for name, abi_name, offset in _MITIGATION_VECTORS:
                if any(raw[offset : offset + 8]):
                    raise EvidenceError(
                        f"report reserved bytes 0x{offset:03x}..0x{offset + 8:03x} are not zero: "
                        f"{abi_name} is a version {MITIGATION_VECTOR_REPORT_VERSION} field, "
                        f"reserved in a version {version} report"
                    )
                values[name] = 0
        GuestPolicy.from_int(values["policy"])
        SignerInfo.from_int(values["signer_info"])
        return cls(**values)

    def to_abi_bytes(self) -> bytes:
        """Rebuild the raw 0x4A0-byte report (go-sev-guest `ReportToAbiBytes`).

        Every field is written where it lies, whatever the version, so two different reports
        never encode to the same (signed) bytes. A mitigation vector set in a report older than
        version 5 therefore lands in bytes that are reserved there; `from_abi_bytes` refuses it
        and `version_field_problems` names it (the verifier checks both).
        """
        buf = bytearray(REPORT_SIZE)
        for name, _, offset, size in _REPORT_INTS:
            value = getattr(self, name)
            if not 0 <= value < 1 << (8 * size):
                raise EvidenceError(f"report field {name}={value} does not fit in {size} byte(s)")
            buf[offset : offset + size] = value.to_bytes(size, "little")
        for name, _, offset, size in _REPORT_BYTES:
            value = getattr(self, name)
            if len(value) != size:
                raise EvidenceError(f"report field {name} is {len(value)} bytes, expected {size}")
            buf[offset : offset + size] = value
        if self.version >= CPUID_REPORT_VERSION:
            family, model, stepping = cpuid_fms(self.cpuid1eax_fms)
            if family > 0xFF:
                raise EvidenceError(f"CPUID family 0x{family:x} does not fit in a byte")
            buf[_CPUID_OFFSET : _CPUID_OFFSET + 3] = bytes((family, model, stepping))
        elif self.cpuid1eax_fms:
            raise EvidenceError("cpuid1eax_fms is set on a version 2 report")
        SignerInfo.from_int(self.signer_info)
        return bytes(buf)

    def signed_bytes(self) -> bytes:
        return self.to_abi_bytes()[:SIGNED_REPORT_SIZE]

    def version_field_problems(self) -> list[str]:
        """Fields set that this report's version does not have (empty if none).

        The mitigation vectors exist from version 5 on; in older reports their bytes are
        reserved and must be zero, so a non-zero value is never a mitigation vector.
        """
        if self.version >= MITIGATION_VECTOR_REPORT_VERSION:
            return []
        return [
            f"{abi_name} 0x{getattr(self, name):x} is set, but it is a version "
            f"{MITIGATION_VECTOR_REPORT_VERSION} field, reserved (must be zero) in a version "
            f"{self.version} report"
            for name, abi_name, _ in _MITIGATION_VECTORS
            if getattr(self, name)
        ]

    def mitigation_vectors(self) -> tuple[int, int]:
        """(LAUNCH_MIT_VECTOR, CURRENT_MIT_VECTOR); zero before version 5, which lacks them."""
        if self.version < MITIGATION_VECTOR_REPORT_VERSION:
            return 0, 0
        return self.launch_mit_vector, self.current_mit_vector

    # -- protobuf -----------------------------------------------------------------------------

    @classmethod
    def from_proto(cls, buf: bytes) -> SnpReport:
        values: dict[str, Any] = {}
        for number, wire, value in _proto_fields(buf):
            if number in _INT_BY_FIELD:
                name, size = _INT_BY_FIELD[number]
                values[name] = _expect_int(number, wire, value, 64 if size == 8 else 32, name)
            elif number in _BYTES_BY_FIELD:
                name, _ = _BYTES_BY_FIELD[number]
                values[name] = _expect_bytes(number, wire, value, name)
            elif number == _CPUID_FIELD:
                values["cpuid1eax_fms"] = _expect_int(number, wire, value, 32, "cpuid1eax_fms")
        return cls(**values)

    def to_proto(self) -> bytes:
        parts: list[tuple[int, bytes]] = []
        for name, number, _, _ in _REPORT_INTS:
            parts.append((number, _enc_uint(number, getattr(self, name))))
        for name, number, _, _ in _REPORT_BYTES:
            parts.append((number, _enc_bytes(number, getattr(self, name))))
        parts.append((_CPUID_FIELD, _enc_uint(_CPUID_FIELD, self.cpuid1eax_fms)))
        return b"".join(part for _, part in sorted(parts, key=lambda p: p[0]))

    # -- convenience --------------------------------------------------------------------------

    def replace(self, **changes: Any) -> SnpReport:
        return replace(self, **changes)

    @property
    def reported_tcb_parts(self) -> TcbParts:
        return TcbParts.from_int(self.reported_tcb)

    @property
    def signer(self) -> SignerInfo:
        return SignerInfo.from_int(self.signer_info)

    def product_line(self) -> str | None:
        """The product line from the (signed) CPUID bytes of a v3+ report, else None."""
        if self.version >= CPUID_REPORT_VERSION and self.cpuid1eax_fms:
            return product_line_from_cpuid(self.cpuid1eax_fms)
        return None

    def signature_rs(self) -> tuple[int, int]:
        """ECDSA (r, s) from the little-endian 72-byte fields of the signature."""
        if len(self.signature) != 512:
            raise EvidenceError("report signature is not 512 bytes")
        return (
            int.from_bytes(self.signature[0:72], "little"),
            int.from_bytes(self.signature[72:144], "little"),
        )


def encode_report_signature(r: int, s: int) -> bytes:
    """The 512-byte SIGNATURE field for an ECDSA P-384 (r, s)."""
    return r.to_bytes(72, "little") + s.to_bytes(72, "little") + bytes(512 - 144)


@dataclass(frozen=True)
class CertificateChain:
    """`sevsnp.CertificateChain`: DER certificates and extras (e.g. the CRL)."""

    vcek_cert: bytes = b""
    ask_cert: bytes = b""
    ark_cert: bytes = b""
    firmware_cert: bytes = b""
    vlek_cert: bytes = b""
    extras: Mapping[str, bytes] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, buf: bytes) -> CertificateChain:
        names = {1: "vcek_cert", 2: "ask_cert", 3: "ark_cert", 4: "firmware_cert", 6: "vlek_cert"}
        values: dict[str, Any] = {}
        extras: dict[str, bytes] = {}
        for number, wire, value in _proto_fields(buf):
            if number in names:
                values[names[number]] = _expect_bytes(number, wire, value, names[number])
            elif number == 7:
                entry = _expect_bytes(number, wire, value, "extras entry")
                key, item = "", b""
                for enumber, ewire, evalue in _proto_fields(entry):
                    if enumber == 1:
                        raw_key = _expect_bytes(enumber, ewire, evalue, "extras key")
                        try:
                            key = raw_key.decode("utf-8")
                        except UnicodeDecodeError:
                            raise EvidenceError("protobuf: extras key is not UTF-8") from None
                    elif enumber == 2:
                        item = _expect_bytes(enumber, ewire, evalue, "extras value")
                extras[key] = item
        return cls(extras=extras, **values)

    def to_proto(self) -> bytes:
        out = (
            _enc_bytes(1, self.vcek_cert)
            + _enc_bytes(2, self.ask_cert)
            + _enc_bytes(3, self.ark_cert)
            + _enc_bytes(4, self.firmware_cert)
            + _enc_bytes(6, self.vlek_cert)
        )
        for key in sorted(self.extras):
            entry = _enc_bytes(1, key.encode("utf-8")) + _enc_bytes(2, self.extras[key])
            out += _enc_bytes(7, entry, always=True)
        return out


@dataclass(frozen=True)
class SevProduct:
    """`sevsnp.SevProduct`: product enum, deprecated stepping, optional machine stepping."""

    name: int = 0
    stepping: int = 0
    machine_stepping: int | None = None

    @property
    def product_line(self) -> str:
        return SEV_PRODUCT_NAMES.get(self.name, UNKNOWN_PRODUCT)

    @classmethod
    def from_proto(cls, buf: bytes) -> SevProduct:
        name, stepping = 0, 0
        machine: int | None = None
        for number, wire, value in _proto_fields(buf):
            if number == 1:
                name = _expect_int(number, wire, value, 64, "product name")
                if name >= 1 << 63:  # negative int32 enum values arrive sign-extended
                    name -= 1 << 64
            elif number == 2:
                stepping = _expect_int(number, wire, value, 32, "stepping")
            elif number == 3:
                inner = _expect_bytes(number, wire, value, "machine_stepping")
                machine = machine or 0
                for inumber, iwire, ivalue in _proto_fields(inner):
                    if inumber == 1:
                        machine = _expect_int(inumber, iwire, ivalue, 32, "machine_stepping")
        return cls(name=name, stepping=stepping, machine_stepping=machine)

    def to_proto(self) -> bytes:
        out = _enc_uint(1, self.name) + _enc_uint(2, self.stepping)
        if self.machine_stepping is not None:
            out += _enc_bytes(3, _enc_uint(1, self.machine_stepping), always=True)
        return out


@dataclass(frozen=True)
class SnpAttestation:
    """`sevsnp.Attestation`: what Contrast puts into `raw_attestation_doc` for SEV-SNP."""

    report: SnpReport | None = None
    certificate_chain: CertificateChain | None = None
    product: SevProduct | None = None

    @classmethod
    def from_proto(cls, buf: bytes) -> SnpAttestation:
        # Repeated occurrences of a message field merge; concatenating their bytes does that.
        chunks: dict[int, list[bytes]] = {1: [], 2: [], 3: []}
        for number, wire, value in _proto_fields(buf):
            if number in chunks:
                chunks[number].append(_expect_bytes(number, wire, value, "Attestation field"))
        report = SnpReport.from_proto(b"".join(chunks[1])) if chunks[1] else None
        chain = CertificateChain.from_proto(b"".join(chunks[2])) if chunks[2] else None
        product = SevProduct.from_proto(b"".join(chunks[3])) if chunks[3] else None
        return cls(report=report, certificate_chain=chain, product=product)

    def to_proto(self) -> bytes:
        out = b""
        if self.report is not None:
            out += _enc_bytes(1, self.report.to_proto(), always=True)
        if self.certificate_chain is not None:
            out += _enc_bytes(2, self.certificate_chain.to_proto(), always=True)
        if self.product is not None:
            out += _enc_bytes(3, self.product.to_proto(), always=True)
        return out


# =============================================================================================
# AMD KDS certificate extensions
# =============================================================================================


def _ext_uint8(value: bytes, what: str) -> int:
    tlv = _der_single(value, _TAG_INTEGER)
    number = _der_uint(value, tlv)
    if number > 255:
        raise EvidenceError(f"KDS extension {what}={number} is not a uint8")
    return number


def _ext_ia5(value: bytes, what: str) -> str:
    if not value or value[0] != _TAG_IA5STRING:
        raise EvidenceError(f"KDS extension {what} is not tagged as an IA5String")
    tlv = _der_single(value, _TAG_IA5STRING)
    raw = value[tlv.content : tlv.end]
    if any(b > 0x7F for b in raw):
        raise EvidenceError(f"KDS extension {what} is not ASCII")
    return raw.decode("ascii")


def _ext_hwid(value: bytes, size: int) -> bytes:
    # AMD's KDS puts the raw bytes without a DER tag; accept an OCTET STRING too.
    if len(value) == size:
        return value
    tlv = _der_single(value, _TAG_OCTET_STRING)
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


def kds_vcek_url(product_line: str, chip_id: bytes, tcb: TcbParts) -> str:
    """The AMD KDS URL of the VCEK for a chip at a TCB (Milan/Genoa: full 64-byte chip id)."""
    return (
        f"{KDS_BASE_URL}/vcek/v1/{product_line}/{chip_id.hex()}"
        f"?blSPL={tcb.bl}&teeSPL={tcb.tee}&snpSPL={tcb.snp}&ucodeSPL={tcb.ucode}"
    )


def kds_cert_chain_url(product_line: str) -> str:
    return f"{KDS_BASE_URL}/vcek/v1/{product_line}/cert_chain"


def kds_crl_url(product_line: str) -> str:
    return f"{KDS_BASE_URL}/vcek/v1/{product_line}/crl"


# =============================================================================================
# Trusted roots: an AMD-style ASK + ARK pair for one product line
# =============================================================================================


@dataclass(frozen=True)
class TrustedRoot:
    """An ARK (self-signed root) and the ASK it signed, for one product line."""

    product_line: str
    ask: x509.Certificate
    ark: x509.Certificate
    source: str = ""

    @property
    def ask_der(self) -> bytes:
        return self.ask.public_bytes(serialization.Encoding.DER)

    @property
    def ark_der(self) -> bytes:
        return self.ark.public_bytes(serialization.Encoding.DER)

    def to_pem(self) -> bytes:
        """PEM ASK then ARK, like AMD KDS's cert_chain body."""
        return pem_encode("CERTIFICATE", self.ask_der) + pem_encode("CERTIFICATE", self.ark_der)

    def __repr__(self) -> str:
        return f"TrustedRoot(product_line={self.product_line!r}, source={self.source!r})"


def parse_trusted_root(pem_chain: bytes, *, source: str = "") -> TrustedRoot:
    """Parse an AMD KDS cert_chain body (PEM ASK, then PEM ARK, nothing else) and check it.

    Checks: both AMD-style names (CN ``SEV-<Line>`` / ``ARK-<Line>``), the ARK is self-signed,
    the ARK signs the ASK (RSA-PSS SHA-384, salt 48), the ASK is a CA.
    """
    blocks = pem_blocks(pem_chain)
    if len(blocks) != 2 or any(label != "CERTIFICATE" for label, _ in blocks):
        raise EvidenceError("a trusted root is two PEM CERTIFICATE blocks: ASK, then ARK")
    (_, ask_der), (_, ark_der) = blocks
    try:
        ask = load_certificate(ask_der)
    except EvidenceError as exc:
        raise EvidenceError(f"first certificate (ASK): {exc}") from None
    try:
        ark = load_certificate(ark_der)
    except EvidenceError as exc:
        raise EvidenceError(f"second certificate (ARK): {exc}") from None
    # Decoded here so that using the root later (chain checks, CRLs) cannot fail on them.
    ark_key = certificate_public_key(ark, "ARK")
    certificate_public_key(ask, "ASK")
    ark_cn = name_value(ark.subject, NameOID.COMMON_NAME)
    if len(ark_cn) != 1 or not ark_cn[0].startswith("ARK-"):
        raise EvidenceError(f"second certificate is not an ARK (CN {ark_cn})")
    line = ark_cn[0][len("ARK-") :]
    problems = amd_name_problems(ark.subject, f"ARK-{line}")
    if ark.issuer != ark.subject:
        problems.append("ARK is not self-issued")
    ask_cn = name_value(ask.subject, NameOID.COMMON_NAME)
    if ask_cn not in ([f"SEV-{line}"], [f"SEV-VLEK-{line}"]):
        problems.append(f"first certificate is not the ASK of {line} (CN {ask_cn})")
    if ask.issuer != ark.subject:
        problems.append("ASK is not issued by the ARK")
    try:
        constraints = ask.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not constraints.ca:
            problems.append("ASK is not a CA")
    except x509.ExtensionNotFound:
        problems.append("ASK has no basicConstraints")
    for what, der in (("ARK", ark_der), ("ASK", ask_der)):
        try:
            verify_amd_signature(der, ark_key)
        except EvidenceError as exc:
            problems.append(f"{what} signature by the ARK: {exc}")
    if problems:
        raise EvidenceError(f"invalid trusted root {source or line}: " + "; ".join(problems))
    return TrustedRoot(product_line=line, ask=ask, ark=ark, source=source)


# =============================================================================================
# Go encoding/json decoding helpers (case-insensitive keys, null = zero value, last key wins)
# =============================================================================================


class _JsonObject:
    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs

    def get(self, name: str) -> Any:
        folded = name.casefold()
        found: Any = None
        for key, value in self.pairs:
            if key == name or key.casefold() == folded:
                found = value
        return found


def _reject_constant(name: str) -> Any:
    raise EvidenceError(f"JSON: {name} is not valid JSON")


def _loads(data: bytes, what: str) -> Any:
    if not isinstance(data, (bytes, bytearray)):
        raise EvidenceError(f"{what}: expected bytes")
    try:
        text = bytes(data).decode("utf-8")
        return json.loads(text, object_pairs_hook=_JsonObject, parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise EvidenceError(f"{what} is not valid JSON: {exc}") from None


def _object(value: Any, what: str) -> _JsonObject:
    if value is None:
        return _JsonObject([])
    if not isinstance(value, _JsonObject):
        raise EvidenceError(f"{what} must be a JSON object")
    return value


def _string(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise EvidenceError(f"{what} must be a JSON string")
    return value


def _b64(value: Any, what: str) -> bytes:
    text = _string(value, what)
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise EvidenceError(f"{what} is not valid standard base64") from None


def _bool(value: Any, what: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise EvidenceError(f"{what} must be true or false")
    return value


def _uint(value: Any, bits: int, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise EvidenceError(f"{what} must be an integer in 0..{(1 << bits) - 1}")
    return value


def _int(value: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not -(1 << 63) <= value < 1 << 63:
        raise EvidenceError(f"{what} must be an integer")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise EvidenceError(f"{what} must be a JSON array")
    return value


def _b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# =============================================================================================
# Contrast AttestationResponse, Privatemode wrapper and request
# =============================================================================================


@dataclass(frozen=True)
class AttestationResponse:
    """The Contrast Coordinator's `/attest` response (JSON, Go field tags)."""

    version: str = ""
    raw_attestation_doc: bytes = b""
    attestation_type: tuple[int, ...] = ()
    manifests: tuple[bytes, ...] = ()
    policies: tuple[bytes, ...] = ()
    root_ca: bytes = b""
    mesh_ca: bytes = b""

    @classmethod
    def from_json(cls, data: bytes) -> AttestationResponse:
        obj = _object(_loads(data, "attestation response"), "attestation response")
        oid = _list(obj.get("attestation_type"), "attestation_type")
        for arc in oid:
            _int(arc, "attestation_type element")
        return cls(
            version=_string(obj.get("version"), "version"),
            raw_attestation_doc=_b64(obj.get("raw_attestation_doc"), "raw_attestation_doc"),
            attestation_type=tuple(oid),
            manifests=tuple(
                _b64(m, f"manifests[{i}]")
                for i, m in enumerate(_list(obj.get("manifests"), "manifests"))
            ),
            policies=tuple(
                _b64(p, f"policies[{i}]")
                for i, p in enumerate(_list(obj.get("policies"), "policies"))
            ),
            root_ca=_b64(obj.get("root_ca"), "root_ca"),
            mesh_ca=_b64(obj.get("mesh_ca"), "mesh_ca"),
        )

    def to_json(self) -> bytes:
        return _dumps(
            {
                "version": self.version,
                "raw_attestation_doc": _b64e(self.raw_attestation_doc),
                "attestation_type": list(self.attestation_type),
                "manifests": [_b64e(m) for m in self.manifests],
                "policies": [_b64e(p) for p in self.policies],
                "root_ca": _b64e(self.root_ca),
                "mesh_ca": _b64e(self.mesh_ca),
            }
        )


def encode_attest_response(attestation_doc: bytes) -> bytes:
    """Privatemode's `/privatemode/v1/attest` response body: ``{"AttestationDoc": b64}``."""
    return _dumps({"AttestationDoc": _b64e(attestation_doc)})


def decode_attest_response(body: bytes) -> bytes:
    """The Contrast response bytes inside a Privatemode `/attest` response body."""
    obj = _object(_loads(body, "attest response"), "attest response")
    doc = _b64(obj.get("AttestationDoc"), "AttestationDoc")
    if not doc:
        raise EvidenceError("attest response has no AttestationDoc")
    return doc


def encode_attest_request(nonce: bytes) -> bytes:
    """Privatemode's `/privatemode/v1/attest` request body: ``{"Nonce": b64}``."""
    return _dumps({"Nonce": _b64e(nonce)})


def decode_attest_request(body: bytes) -> bytes:
    """The nonce of an attest request; it must be 32 bytes."""
    obj = _object(_loads(body, "attest request"), "attest request")
    nonce = _b64(obj.get("Nonce"), "Nonce")
    if len(nonce) != 32:
        raise EvidenceError(f"Nonce must be 32 bytes, got {len(nonce)}")
    return nonce


# =============================================================================================
# Transition digest and report data
# =============================================================================================


def transition_digests(manifests: Sequence[bytes]) -> list[bytes]:
    """The digest after each manifest: t = SHA-256(SHA-256(m) || previous), previous_0 = 0^32."""
    previous = bytes(32)
    out: list[bytes] = []
    for manifest in manifests:
        previous = hashlib.sha256(hashlib.sha256(manifest).digest() + previous).digest()
        out.append(previous)
    return out


def transition_digest(manifests: Sequence[bytes]) -> bytes:
    """The digest of the last transition of a manifest history (32 zero bytes if empty)."""
    digests = transition_digests(manifests)
    return digests[-1] if digests else bytes(32)


def report_data(nonce: bytes, transition: bytes, root_ca: bytes, mesh_ca: bytes) -> bytes:
    """Contrast's legacy `/attest` REPORT_DATA (64 bytes)."""
    digest = hashlib.sha256(
        nonce + transition + hashlib.sha256(root_ca).digest() + hashlib.sha256(mesh_ca).digest()
    ).digest()
    return digest + bytes(32)


# =============================================================================================
# Contrast ID block and ID-key digest (pure-Python P-384 public-key recovery)
# =============================================================================================

_P384_P = 2**384 - 2**128 - 2**96 + 2**32 - 1
_P384_N = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
    16,
)
_P384_B = int(
    "b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef",
    16,
)
_P384_G = (
    int(
        "aa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab7",
        16,
    ),
    int(
        "3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5f",
        16,
    ),
)
_Point = tuple[int, int] | None
_Jacobian = tuple[int, int, int]  # (X, Y, Z) with x = X/Z^2, y = Y/Z^3; Z = 0 is infinity
_INFINITY: _Jacobian = (1, 1, 0)


def _jacobian_double(point: _Jacobian) -> _Jacobian:
    # dbl-2001-b for a = -3. Only public data is involved: no constant-time concerns.
    x, y, z = point
    p = _P384_P
    if z == 0 or y == 0:
        return _INFINITY
    delta = z * z % p
    gamma = y * y % p
    beta = x * gamma % p
    alpha = 3 * (x - delta) * (x + delta) % p
    x3 = (alpha * alpha - 8 * beta) % p
    z3 = ((y + z) * (y + z) - gamma - delta) % p
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % p
    return x3, y3, z3


def _jacobian_add(a: _Jacobian, b: _Jacobian) -> _Jacobian:
    if a[2] == 0:
        return b
    if b[2] == 0:
        return a
    p = _P384_P
    x1, y1, z1 = a
    x2, y2, z2 = b
    z1z1, z2z2 = z1 * z1 % p, z2 * z2 % p
    u1, u2 = x1 * z2z2 % p, x2 * z1z1 % p
    s1, s2 = y1 * z2 * z2z2 % p, y2 * z1 * z1z1 % p
    if u1 == u2:
        return _jacobian_double(a) if s1 == s2 else _INFINITY
    h, r = (u2 - u1) % p, (s2 - s1) % p
    hh = h * h % p
    hhh = h * hh % p
    v = u1 * hh % p
    x3 = (r * r - hhh - 2 * v) % p
    y3 = (r * (v - x3) - s1 * hhh) % p
    return x3, y3, h * z1 * z2 % p


def _to_affine(point: _Jacobian) -> _Point:
    x, y, z = point
    if z == 0:
        return None
    p = _P384_P
    z_inv = pow(z, -1, p)
    z_inv2 = z_inv * z_inv % p
    return x * z_inv2 % p, y * z_inv2 * z_inv % p


def _ec_double_mul(k1: int, p1: tuple[int, int], k2: int, p2: tuple[int, int]) -> _Point:
    """k1*p1 + k2*p2 (Shamir's trick)."""
    a: _Jacobian = (p1[0], p1[1], 1)
    b: _Jacobian = (p2[0], p2[1], 1)
    both = _jacobian_add(a, b)
    result = _INFINITY
    for bit in range(max(k1.bit_length(), k2.bit_length()) - 1, -1, -1):
        result = _jacobian_double(result)
        pick = (k1 >> bit & 1, k2 >> bit & 1)
        if pick == (1, 1):
            result = _jacobian_add(result, both)
        elif pick == (1, 0):
            result = _jacobian_add(result, a)
        elif pick == (0, 1):
            result = _jacobian_add(result, b)
    return _to_affine(result)


def contrast_id_block(
    measurement: bytes,
    guest_policy: int,
    *,
    family_id: bytes = CONTRAST_FAMILY_ID,
    image_id: bytes = CONTRAST_IMAGE_ID,
) -> bytes:
    """Contrast's 0x60-byte ID block: LD, FAMILY_ID, IMAGE_ID, version 1, guest SVN 2, policy."""
    if len(measurement) != 48 or len(family_id) != 16 or len(image_id) != 16:
        raise EvidenceError("ID block: measurement is 48 bytes, family/image IDs 16 bytes")
    return measurement + family_id + image_id + struct.pack("<IIQ", 1, 2, guest_policy)


#: The constant "signature" (r, s) of Contrast's ID blocks.
CONTRAST_ID_SIGNATURE = (2, 1)


def recover_id_public_key(id_block: bytes) -> tuple[int, int]:
    """The P-384 key recovered from signature (2, 1) over `id_block`, as Contrast derives it.

    Both candidate points are computed; the smaller by (X, then Y) is taken.
    """
    r, s = CONTRAST_ID_SIGNATURE
    p, n = _P384_P, _P384_N
    z = int.from_bytes(hashlib.sha384(id_block).digest(), "big")
    rhs = (r**3 - 3 * r + _P384_B) % p
    y = pow(rhs, (p + 1) // 4, p)
    if y * y % p != rhs:
        raise EvidenceError("ID key recovery: r is not the x coordinate of a curve point")
    r_inv = pow(r, -1, n)
    u1 = -z * r_inv % n
    u2 = s * r_inv % n
    candidates = []
    for ry in (y, p - y):
        q = _ec_double_mul(u1, _P384_G, u2, (r, ry))
        if q is not None:
            candidates.append(q)
    if not candidates:
        raise EvidenceError("ID key recovery failed")
    return min(candidates)


def id_key_bytes(public_key: tuple[int, int]) -> bytes:
    """The 0x404-byte SEV ID public key: curve 2 (P-384), Qx and Qy little-endian in 72 bytes."""
    qx, qy = public_key
    return (
        struct.pack("<I", 2) + qx.to_bytes(72, "little") + qy.to_bytes(72, "little") + bytes(0x370)
    )


@functools.lru_cache(maxsize=256)
def id_key_digest(
    measurement: bytes,
    guest_policy: int,
    *,
    family_id: bytes = CONTRAST_FAMILY_ID,
    image_id: bytes = CONTRAST_IMAGE_ID,
) -> bytes:
    """The trusted ID_KEY_DIGEST for a launch measurement and guest policy (SHA-384, 48 bytes)."""
    block = contrast_id_block(measurement, guest_policy, family_id=family_id, image_id=image_id)
    return hashlib.sha384(id_key_bytes(recover_id_public_key(block))).digest()


# =============================================================================================
# Manifest
# =============================================================================================

COORDINATOR_ROLE = "coordinator"
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True)
class PolicyEntry:
    sans: tuple[str, ...] = ()
    workload_secret_id: str = ""
    role: str = ""

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "SANs": list(self.sans),
            "WorkloadSecretID": self.workload_secret_id,
            "Role": self.role,
        }


@dataclass(frozen=True)
class MinimumTcb:
    """`SNPTCB`: each part is required (``None`` = missing, which `validate()` rejects)."""

    bootloader_version: int | None = None
    tee_version: int | None = None
    snp_version: int | None = None
    microcode_version: int | None = None

    _JSON = (
        ("bootloader_version", "BootloaderVersion"),
        ("tee_version", "TEEVersion"),
        ("snp_version", "SNPVersion"),
        ("microcode_version", "MicrocodeVersion"),
    )

    def parts(self) -> TcbParts:
        return TcbParts(
            bl=self.bootloader_version or 0,
            tee=self.tee_version or 0,
            snp=self.snp_version or 0,
            ucode=self.microcode_version or 0,
        )

    def to_json_obj(self) -> dict[str, Any]:
        return {json_name: getattr(self, name) for name, json_name in self._JSON}


@dataclass(frozen=True)
class SnpReferenceValues:
    product_name: str = ""
    trusted_measurement: str = ""
    minimum_tcb: MinimumTcb = field(default_factory=MinimumTcb)
    guest_policy: GuestPolicy = field(default_factory=GuestPolicy)
    platform_info: PlatformInfo = field(default_factory=PlatformInfo)
    minimum_mitigation_vector: int = 0
    allowed_chip_ids: tuple[str, ...] = ()
    platform: str = ""
    cpus: int = 0

    def to_json_obj(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.platform:
            out["Platform"] = self.platform
        out.update(
            {
                "ProductName": self.product_name,
                "TrustedMeasurement": self.trusted_measurement,
                "MinimumTCB": self.minimum_tcb.to_json_obj(),
                "GuestPolicy": self.guest_policy.to_json_obj(),
                "PlatformInfo": self.platform_info.to_json_obj(),
                "MinimumMitigationVector": self.minimum_mitigation_vector,
                "AllowedChipIDs": list(self.allowed_chip_ids),
            }
        )
        if self.cpus:
            out["CPUs"] = self.cpus
        return out


@dataclass(frozen=True)
class TdxReferenceValues:
    platform: str = ""
    min_tcb_evaluation_data_number: int = 0
    mr_td: str = ""
    mr_seam: str = ""
    rtmrs: tuple[str, str, str, str] = ("", "", "", "")
    xfam: str = ""
    allowed_piids: tuple[str, ...] = ()
    memory_integrity: bool = False
    smt_disabled: bool = False
    static_platform: bool = False

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "Platform": self.platform,
            "MinTCBEvaluationDataNumber": self.min_tcb_evaluation_data_number,
            "MrTd": self.mr_td,
            "MrSeam": self.mr_seam,
            "Rtmrs": list(self.rtmrs),
            "Xfam": self.xfam,
            "AllowedPIIDs": list(self.allowed_piids),
            "MemoryIntegrity": self.memory_integrity,
            "SMTDisabled": self.smt_disabled,
            "StaticPlatform": self.static_platform,
        }


def _svn(value: Any, what: str) -> int | None:
    # Contrast's SVN decodes a JSON number (float64) and requires 0..255.
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 255:
        raise EvidenceError(f"{what} must be a number in 0..255")
    return int(value)


def _guest_policy(value: Any, what: str) -> GuestPolicy:
    obj = _object(value, what)
    flags = {
        name: _bool(obj.get(json_name), f"{what}.{json_name}")
        for name, _, json_name in GuestPolicy._FLAGS
    }
    return GuestPolicy(
        abi_minor=_uint(obj.get("ABIMinor"), 8, f"{what}.ABIMinor"),
        abi_major=_uint(obj.get("ABIMajor"), 8, f"{what}.ABIMajor"),
        **flags,
    )


def _platform_info(value: Any, what: str) -> PlatformInfo:
    obj = _object(value, what)
    return PlatformInfo(
        **{
            name: _bool(obj.get(json_name), f"{what}.{json_name}")
            for name, _, json_name in PlatformInfo._FLAGS
        }
    )


def _strings(value: Any, what: str) -> tuple[str, ...]:
    return tuple(_string(v, f"{what}[{i}]") for i, v in enumerate(_list(value, what)))


def _snp_reference_values(value: Any, what: str) -> SnpReferenceValues:
    obj = _object(value, what)
    tcb = _object(obj.get("MinimumTCB"), f"{what}.MinimumTCB")
    minimum = MinimumTcb(
        **{
            name: _svn(tcb.get(json_name), f"{what}.MinimumTCB.{json_name}")
            for name, json_name in MinimumTcb._JSON
        }
    )
    return SnpReferenceValues(
        product_name=_string(obj.get("ProductName"), f"{what}.ProductName"),
        trusted_measurement=_string(obj.get("TrustedMeasurement"), f"{what}.TrustedMeasurement"),
        minimum_tcb=minimum,
        guest_policy=_guest_policy(obj.get("GuestPolicy"), f"{what}.GuestPolicy"),
        platform_info=_platform_info(obj.get("PlatformInfo"), f"{what}.PlatformInfo"),
        minimum_mitigation_vector=_uint(
            obj.get("MinimumMitigationVector"), 64, f"{what}.MinimumMitigationVector"
        ),
        allowed_chip_ids=_strings(obj.get("AllowedChipIDs"), f"{what}.AllowedChipIDs"),
        platform=_string(obj.get("Platform"), f"{what}.Platform"),
        cpus=_uint(obj.get("CPUs"), 64, f"{what}.CPUs"),
    )


def _tdx_reference_values(value: Any, what: str) -> TdxReferenceValues:
    obj = _object(value, what)
    rtmrs = list(_strings(obj.get("Rtmrs"), f"{what}.Rtmrs")[:4])
    rtmrs += [""] * (4 - len(rtmrs))  # Go decodes into a [4]HexString array
    return TdxReferenceValues(
        platform=_string(obj.get("Platform"), f"{what}.Platform"),
        min_tcb_evaluation_data_number=_int(
            obj.get("MinTCBEvaluationDataNumber"), f"{what}.MinTCBEvaluationDataNumber"
        ),
        mr_td=_string(obj.get("MrTd"), f"{what}.MrTd"),
        mr_seam=_string(obj.get("MrSeam"), f"{what}.MrSeam"),
        rtmrs=(rtmrs[0], rtmrs[1], rtmrs[2], rtmrs[3]),
        xfam=_string(obj.get("Xfam"), f"{what}.Xfam"),
        allowed_piids=_strings(obj.get("AllowedPIIDs"), f"{what}.AllowedPIIDs"),
        memory_integrity=_bool(obj.get("MemoryIntegrity"), f"{what}.MemoryIntegrity"),
        smt_disabled=_bool(obj.get("SMTDisabled"), f"{what}.SMTDisabled"),
        static_platform=_bool(obj.get("StaticPlatform"), f"{what}.StaticPlatform"),
    )


def hex_bytes(text: str, size: int) -> bytes | None:
    """Decode hex (either case, like Go's hex.DecodeString) of exactly `size` bytes, else None."""
    if len(text) != 2 * size or not all(c in _HEX_DIGITS for c in text):
        return None
    return bytes.fromhex(text)


class ManifestError(EvidenceError):
    """A manifest that cannot be decoded or fails Contrast's `Manifest.Validate()`."""


@dataclass(frozen=True)
class Manifest:
    """A Contrast manifest (v1.20 layout). Keep the raw bytes for hashing; never re-serialize."""

    policies: Mapping[str, PolicyEntry] = field(default_factory=dict)
    snp: tuple[SnpReferenceValues, ...] = ()
    tdx: tuple[TdxReferenceValues, ...] = ()
    workload_owner_pub_keys: tuple[str, ...] = ()
    seedshare_owner_pub_keys: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            obj = _object(_loads(data, "manifest"), "manifest")
            policies: dict[str, PolicyEntry] = {}
            policies_obj = _object(obj.get("Policies"), "Policies")
            for key, value in policies_obj.pairs:  # Go maps: exact keys, the last one wins
                entry = _object(value, f"Policies[{key}]")
                policies[key] = PolicyEntry(
                    sans=_strings(entry.get("SANs"), f"Policies[{key}].SANs"),
                    workload_secret_id=_string(
                        entry.get("WorkloadSecretID"), f"Policies[{key}].WorkloadSecretID"
                    ),
                    role=_string(entry.get("Role"), f"Policies[{key}].Role"),
                )
            refs = _object(obj.get("ReferenceValues"), "ReferenceValues")
            snp = tuple(
                _snp_reference_values(v, f"snp[{i}]")
                for i, v in enumerate(_list(refs.get("snp"), "snp"))
            )
            tdx = tuple(
                _tdx_reference_values(v, f"tdx[{i}]")
                for i, v in enumerate(_list(refs.get("tdx"), "tdx"))
            )
            return cls(
                policies=policies,
                snp=snp,
                tdx=tdx,
                workload_owner_pub_keys=_strings(
                    obj.get("WorkloadOwnerPubKeys"), "WorkloadOwnerPubKeys"
                ),
                seedshare_owner_pub_keys=_strings(
                    obj.get("SeedshareOwnerPubKeys"), "SeedshareOwnerPubKeys"
                ),
            )
        except ManifestError:
            raise
        except EvidenceError as exc:
            raise ManifestError(f"manifest: {exc}") from None

    def to_json(self) -> bytes:
        """Go-style JSON (compact, Go field names, sorted policy keys)."""
        refs: dict[str, Any] = {"snp": [rv.to_json_obj() for rv in self.snp]}
        if self.tdx:
            refs["tdx"] = [rv.to_json_obj() for rv in self.tdx]
        return _dumps(
            {
                "Policies": {k: self.policies[k].to_json_obj() for k in sorted(self.policies)},
                "ReferenceValues": refs,
                "WorkloadOwnerPubKeys": list(self.workload_owner_pub_keys) or None,
                "SeedshareOwnerPubKeys": list(self.seedshare_owner_pub_keys) or None,
            }
        )

    def coordinator_policy_hashes(self) -> list[bytes]:
        out = []
        for key, entry in self.policies.items():
            digest = hex_bytes(key, 32)
            if entry.role == COORDINATOR_ROLE and digest is not None:
                out.append(digest)
        return out

    def validation_errors(self) -> list[str]:
        """Contrast v1.20 `Manifest.Validate()` findings (empty when valid)."""
        errors: list[str] = []
        coordinators = 0
        for key, entry in self.policies.items():
            if hex_bytes(key, 32) is None:
                errors.append(f"policy hash {key!r} is not 64 hex characters")
            if entry.role not in ("", COORDINATOR_ROLE):
                errors.append(f"policy {key}: unknown role {entry.role!r}")
            elif entry.role == COORDINATOR_ROLE:
                coordinators += 1
        if coordinators == 0:
            errors.append("no policy has the coordinator role")
        for i, rv in enumerate(self.snp):
            errors.extend(f"snp[{i}]: {e}" for e in _snp_reference_value_errors(rv))
        for i, tdx in enumerate(self.tdx):
            errors.extend(f"tdx[{i}]: {e}" for e in _tdx_reference_value_errors(tdx))
        if not self.snp and not self.tdx:
            errors.append("reference values in manifest cannot be empty")
        for i, key in enumerate(self.workload_owner_pub_keys):
            try:
                loaded = serialization.load_der_public_key(bytes.fromhex(key))
                if not isinstance(loaded, ec.EllipticCurvePublicKey):
                    raise ValueError("not an ECDSA key")
            except ValueError as exc:
                errors.append(f"WorkloadOwnerPubKeys[{i}]: {exc}")
        for i, key in enumerate(self.seedshare_owner_pub_keys):
            try:
                pem = pem_encode("RSA PUBLIC KEY", bytes.fromhex(key))
                if not isinstance(serialization.load_pem_public_key(pem), rsa.RSAPublicKey):
                    raise ValueError("not an RSA key")
            except ValueError as exc:
                errors.append(f"SeedshareOwnerPubKeys[{i}]: {exc}")
        return errors

    def validate(self) -> None:
        errors = self.validation_errors()
        if errors:
            raise ManifestError("manifest is invalid: " + "; ".join(errors))


def _snp_reference_value_errors(rv: SnpReferenceValues) -> list[str]:
    errors = [
        f"MinimumTCB.{json_name}: field cannot be empty"
        for name, json_name in MinimumTcb._JSON
        if getattr(rv.minimum_tcb, name) is None
    ]
    if rv.product_name not in (MILAN, GENOA):
        errors.append(f"ProductName: unknown product name {rv.product_name!r}")
    if hex_bytes(rv.trusted_measurement, 48) is None:
        errors.append("TrustedMeasurement: not 96 hex characters")
    policy = rv.guest_policy
    if policy.abi_major != 0:
        errors.append("GuestPolicy.ABIMajor: modifying this field is not permitted")
    if policy.abi_minor not in (0, 31):
        errors.append("GuestPolicy.ABIMinor: modifying this field is not permitted")
    if not policy.smt:
        errors.append("GuestPolicy.SMT: modifying this field is not permitted")
    for name, _, json_name in GuestPolicy._FLAGS:
        if name in ("smt", "page_swap_disable"):
            continue
        if getattr(policy, name):
            errors.append(f"GuestPolicy.{json_name}: modifying this field is not permitted")
    for i, chip in enumerate(rv.allowed_chip_ids):
        if hex_bytes(chip, 64) is None:
            errors.append(f"AllowedChipIDs[{i}]: not 128 hex characters")
    return errors


def _tdx_reference_value_errors(rv: TdxReferenceValues) -> list[str]:
    errors = []
    if hex_bytes(rv.mr_td, 48) is None:
        errors.append("MrTd: not 96 hex characters")
    if hex_bytes(rv.mr_seam, 48) is None:
        errors.append("MrSeam: not 96 hex characters")
    if hex_bytes(rv.xfam, 8) is None:
        errors.append("Xfam: not 16 hex characters")
    for i, rtmr in enumerate(rv.rtmrs):
        if hex_bytes(rtmr, 48) is None:
            errors.append(f"RTMR[{i + 1}]: not 96 hex characters")
    return errors


def reference_value_label(index: int, rv: SnpReferenceValues) -> str:
    return f"snp[{index}] ({rv.product_name or 'no product'})"
