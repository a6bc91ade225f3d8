"""X.509, PEM and DER plumbing shared by the AMD and Intel certificate checks.

cryptography parses every certificate and CRL (AMD's serial-0 VCEKs included) and verifies every
signature. The small DER reader here exists only because cryptography has no public decoder for
the bodies of extensions it does not know: AMD's KDS extensions (an INTEGER, an IA5String) and
Intel's SGX extension (a SEQUENCE of OID/value pairs) reach us as raw DER bytes.
Malformed input raises `EvidenceError`.
"""

from __future__ import annotations

import base64
import binascii
import re
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning

from ._errors import EvidenceError

# ---------------------------------------------------------------------------------------------
# DER (extension bodies only)
# ---------------------------------------------------------------------------------------------


TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04
TAG_OID = 0x06
TAG_IA5STRING = 0x16
TAG_SEQUENCE = 0x30


@dataclass(frozen=True)
class Tlv:
    tag: int
    start: int  # first byte of the tag
    content: int  # first content byte
    end: int  # one past the last content byte


def der_read(data: bytes, pos: int, limit: int) -> Tlv:
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
    return Tlv(tag, pos, content, end)


def der_children(data: bytes, parent: Tlv) -> list[Tlv]:
    out: list[Tlv] = []
    pos = parent.content
    while pos < parent.end:
        tlv = der_read(data, pos, parent.end)
        out.append(tlv)
        pos = tlv.end
    return out


def der_single(data: bytes, tag: int) -> Tlv:
    """The one element `data` consists of, which must have `tag`."""
    tlv = der_read(data, 0, len(data))
    if tlv.end != len(data):
        raise EvidenceError("DER: trailing bytes")
    if tlv.tag != tag:
        raise EvidenceError(f"DER: expected tag 0x{tag:02x}, got 0x{tlv.tag:02x}")
    return tlv


def der_uint(data: bytes, tlv: Tlv) -> int:
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

    cryptography (>= 48) parses a non-positive serial with a deprecation warning, silenced here;
    the tests load AMD's real VCEKs, so a release that refuses them is caught before it ships.
    The names, validity and extensions are decoded here (`check_certificate_fields`), so
    reading them later cannot fail.
    """
    der = certificate_der(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            cert = x509.load_der_x509_certificate(der)
    except (ValueError, x509.InvalidVersion) as exc:
        raise EvidenceError(f"not a valid X.509 certificate: {exc}") from None
    return check_certificate_fields(cert)


def load_crl(der: bytes) -> x509.CertificateRevocationList:
    """Parse a DER CRL, its lazily decoded parts (issuer, dates, extensions, entries) included."""
    try:
        crl = x509.load_der_x509_crl(der)
    except (ValueError, x509.InvalidVersion) as exc:
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
