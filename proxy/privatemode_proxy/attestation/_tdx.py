"""Intel TDX evidence: the quote v4 and go-tdx-guest's `tdx.QuoteV4` protobuf, both ways.

Contrast's TDX `raw_attestation_doc` is a `QuoteV4` protobuf; the signatures are over the raw
quote v4 (Intel DCAP ABI), so the verifier re-encodes it. The layout, offsets and go-tdx-guest's
checks are in shared/vectors/tdx/README.txt ("QUOTE V4 LAYOUT"). Pure: bytes in, structures out
(and back); malformed input raises `EvidenceError` (messages follow go-tdx-guest's wording).
Also here: the PCK certificate chain in the quote and the PCK certificate's SGX extension.
Over 600 lines on purpose: the quote's two encodings (ABI and protobuf) are kept side by side.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509

from ._errors import EvidenceError
from ._protobuf import enc_bytes, enc_uint, expect_bytes, expect_int, proto_fields
from ._x509 import TAG_OCTET_STRING, TAG_SEQUENCE, Tlv, der_children, der_single, der_uint

QUOTE_VERSION = 4
ATTESTATION_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_TDX = 0x81
HEADER_SIZE = 0x30
BODY_SIZE = 0x248
SIGNED_SIZE = HEADER_SIZE + BODY_SIZE  # 0x278: what the attestation key signs
MIN_QUOTE_SIZE = 0x3FC
QE_REPORT_SIZE = 384
CERT_DATA_QE_REPORT = 6
CERT_DATA_PCK_CHAIN = 5
#: Intel's QE vendor id (what Contrast requires).
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

# (attribute, proto field, ABI offset, size); header integers are little-endian in the ABI.
_HEADER_INTS = (
    ("version", 1, 0x00, 2),
    ("attestation_key_type", 2, 0x02, 2),
    ("tee_type", 3, 0x04, 4),
)
_HEADER_BYTES = (
    ("qe_svn", 4, 0x0A, 2),
    ("pce_svn", 5, 0x08, 2),  # go-tdx-guest: PCE SVN at 0x08, QE SVN at 0x0A
    ("qe_vendor_id", 6, 0x0C, 16),
    ("user_data", 7, 0x1C, 20),
)
_BODY_BYTES = (
    ("tee_tcb_svn", 1, 0x000, 16),
    ("mr_seam", 2, 0x010, 48),
    ("mr_signer_seam", 3, 0x040, 48),
    ("seam_attributes", 4, 0x070, 8),
    ("td_attributes", 5, 0x078, 8),
    ("xfam", 6, 0x080, 8),
    ("mr_td", 7, 0x088, 48),
    ("mr_config_id", 8, 0x0B8, 48),
    ("mr_owner", 9, 0x0E8, 48),
    ("mr_owner_config", 10, 0x118, 48),
)
_RTMRS_FIELD, _RTMRS_OFFSET = 11, 0x148
_REPORT_DATA_FIELD, _REPORT_DATA_OFFSET = 12, 0x208

# QE report (SGX REPORT body): (attribute, proto field, offset, size, is_int)
_QE_REPORT = (
    ("cpu_svn", 1, 0x000, 16, False),
    ("misc_select", 2, 0x010, 4, True),
    ("reserved1", 3, 0x014, 28, False),
    ("attributes", 4, 0x030, 16, False),
    ("mr_enclave", 5, 0x040, 32, False),
    ("reserved2", 6, 0x060, 32, False),
    ("mr_signer", 7, 0x080, 32, False),
    ("reserved3", 8, 0x0A0, 96, False),
    ("isv_prod_id", 9, 0x100, 2, True),
    ("isv_svn", 10, 0x102, 2, True),
    ("reserved4", 11, 0x104, 60, False),
    ("report_data", 12, 0x140, 64, False),
)


@dataclass(frozen=True)
class EnclaveReport:
    """The QE report (an SGX REPORT body, 384 bytes)."""

    cpu_svn: bytes = b""
    misc_select: int = 0
    reserved1: bytes = b""
    attributes: bytes = b""
    mr_enclave: bytes = b""
    reserved2: bytes = b""
    mr_signer: bytes = b""
    reserved3: bytes = b""
    isv_prod_id: int = 0
    isv_svn: int = 0
    reserved4: bytes = b""
    report_data: bytes = b""

    @classmethod
    def from_abi_bytes(cls, raw: bytes) -> EnclaveReport:
        if len(raw) != QE_REPORT_SIZE:
            raise EvidenceError(f"QE report is {len(raw)} bytes, expected {QE_REPORT_SIZE}")
        values: dict[str, Any] = {}
        for name, _, offset, size, is_int in _QE_REPORT:
            chunk = raw[offset : offset + size]
            values[name] = int.from_bytes(chunk, "little") if is_int else bytes(chunk)
        return cls(**values)

    def to_abi_bytes(self) -> bytes:
        out = bytearray(QE_REPORT_SIZE)
        for name, _, offset, size, is_int in _QE_REPORT:
            value = getattr(self, name)
            if is_int:
                if not 0 <= value < 1 << (8 * size):
                    raise EvidenceError(f"QE report {name}={value} does not fit in {size} bytes")
                value = value.to_bytes(size, "little")
            if len(value) != size:
                raise EvidenceError(f"QE report {name} is {len(value)} bytes, expected {size}")
            out[offset : offset + size] = value
        return bytes(out)

    @classmethod
    def from_proto(cls, buf: bytes) -> EnclaveReport:
        by_field = {number: (name, is_int) for name, number, _, _, is_int in _QE_REPORT}
        values: dict[str, Any] = {}
        for number, wire, value in proto_fields(buf):
            if number in by_field:
                name, is_int = by_field[number]
                values[name] = (
                    expect_int(number, wire, value, 32, name)
                    if is_int
                    else expect_bytes(number, wire, value, name)
                )
        return cls(**values)

    def to_proto(self) -> bytes:
        out = b""
        for name, number, _, _, is_int in _QE_REPORT:
            value = getattr(self, name)
            out += enc_uint(number, value) if is_int else enc_bytes(number, value)
        return out


@dataclass(frozen=True)
class TdxQuote:
    """A TDX quote v4, field for field as go-tdx-guest's `QuoteV4` (sub-messages flattened)."""

    # Header
    version: int = 0
    attestation_key_type: int = 0
    tee_type: int = 0
    qe_svn: bytes = b""
    pce_svn: bytes = b""
    qe_vendor_id: bytes = b""
    user_data: bytes = b""
    # TD quote body
    tee_tcb_svn: bytes = b""
    mr_seam: bytes = b""
    mr_signer_seam: bytes = b""
    seam_attributes: bytes = b""
    td_attributes: bytes = b""
    xfam: bytes = b""
    mr_td: bytes = b""
    mr_config_id: bytes = b""
    mr_owner: bytes = b""
    mr_owner_config: bytes = b""
    rtmrs: tuple[bytes, ...] = ()
    report_data: bytes = b""
    # Signed data
    signed_data_size: int = 0
    signature: bytes = b""
    attestation_key: bytes = b""
    certification_data_type: int = 0
    certification_data_size: int = 0
    qe_report: EnclaveReport = field(default_factory=EnclaveReport)
    qe_report_signature: bytes = b""
    qe_auth_data_size: int = 0
    qe_auth_data: bytes = b""
    pck_chain_type: int = 0
    pck_chain_size: int = 0
    pck_chain: bytes = b""
    extra_bytes: bytes = b""

    def replace(self, **changes: Any) -> TdxQuote:
        return replace(self, **changes)

    # -- raw ABI bytes ------------------------------------------------------------------------

    @classmethod
    def from_abi_bytes(cls, raw: bytes) -> TdxQuote:
        """Parse a raw quote v4 (go-tdx-guest `abi.QuoteToProto`)."""
        if len(raw) < 2:
            raise EvidenceError("could not convert raw bytes to QuoteV4: quote is too short")
        version = int.from_bytes(raw[0:2], "little")
        if version != QUOTE_VERSION:
            raise EvidenceError(
                "could not convert raw bytes to QuoteV4: quote format not supported"
            )
        if len(raw) < MIN_QUOTE_SIZE:
            raise EvidenceError(
                f"could not convert raw bytes to QuoteV4: quote is {len(raw)} bytes, at least "
                f"0x{MIN_QUOTE_SIZE:x} expected"
            )

        def fail(message: str) -> EvidenceError:
            return EvidenceError(f"could not convert raw bytes to QuoteV4: {message}")

        values: dict[str, Any] = {}
        for name, _, offset, size in _HEADER_INTS:
            values[name] = int.from_bytes(raw[offset : offset + size], "little")
        for name, _, offset, size in _HEADER_BYTES:
            values[name] = bytes(raw[offset : offset + size])
        if values["attestation_key_type"] != ATTESTATION_KEY_TYPE_ECDSA_P256:
            raise fail(f"attestation key type {values['attestation_key_type']} is not 2 (P-256)")
        if values["tee_type"] != TEE_TYPE_TDX:
            raise fail(f"TEE type 0x{values['tee_type']:x} is not TDX (0x81)")
        body = raw[HEADER_SIZE:SIGNED_SIZE]
        for name, _, offset, size in _BODY_BYTES:
            values[name] = bytes(body[offset : offset + size])
        values["rtmrs"] = tuple(
            bytes(body[_RTMRS_OFFSET + 48 * i : _RTMRS_OFFSET + 48 * (i + 1)]) for i in range(4)
        )
        values["report_data"] = bytes(body[_REPORT_DATA_OFFSET : _REPORT_DATA_OFFSET + 64])
        size = int.from_bytes(raw[SIGNED_SIZE : SIGNED_SIZE + 4], "little")
        start = SIGNED_SIZE + 4
        if size > len(raw) - start:
            raise fail(f"signed data size 0x{size:x} exceeds the remaining 0x{len(raw) - start:x}")
        signed, extra = raw[start : start + size], raw[start + size :]
        if len(signed) < 0x86:
            raise fail(f"signed data is 0x{len(signed):x} bytes, too short")
        values["signed_data_size"] = size
        values["signature"] = bytes(signed[0:64])
        values["attestation_key"] = bytes(signed[64:128])
        cert_type, cert_size = struct.unpack_from("<HI", signed, 128)
        if cert_size != size - 0x86:
            raise fail(
                f"size of certificate data is 0x{size - 0x86:x}. Expected size 0x{cert_size:x}"
            )
        if cert_type != CERT_DATA_QE_REPORT:
            raise fail(f"certification data type {cert_type} is not 6 (QE report)")
        cert = signed[0x86:]
        if len(cert) < QE_REPORT_SIZE + 64 + 2:
            raise fail("QE report certification data is truncated")
        values["certification_data_type"] = cert_type
        values["certification_data_size"] = cert_size
        values["qe_report"] = EnclaveReport.from_abi_bytes(bytes(cert[:QE_REPORT_SIZE]))
        values["qe_report_signature"] = bytes(cert[QE_REPORT_SIZE : QE_REPORT_SIZE + 64])
        pos = QE_REPORT_SIZE + 64
        (auth_size,) = struct.unpack_from("<H", cert, pos)
        pos += 2
        if pos + auth_size + 6 > len(cert):
            raise fail(f"QE authentication data size 0x{auth_size:x} exceeds the data")
        values["qe_auth_data_size"] = auth_size
        values["qe_auth_data"] = bytes(cert[pos : pos + auth_size])
        pos += auth_size
        chain_type, chain_size = struct.unpack_from("<HI", cert, pos)
        pos += 6
        if chain_size != len(cert) - pos:
            raise fail(
                f"size of PCK certificate chain data is 0x{chain_size:x}, the remaining data is "
                f"0x{len(cert) - pos:x}"
            )
        if chain_type != CERT_DATA_PCK_CHAIN:
            raise fail(f"certification data type {chain_type} is not 5 (PCK certificate chain)")
        values["pck_chain_type"] = chain_type
        values["pck_chain_size"] = chain_size
        values["pck_chain"] = bytes(cert[pos:])
        values["extra_bytes"] = bytes(extra)
        return cls(**values)

    def header_and_body(self) -> bytes:
        """The 0x278 signed bytes (header || TD quote body), as the attestation key signs them."""
        out = bytearray(SIGNED_SIZE)
        for name, _, offset, size in _HEADER_INTS:
            value = getattr(self, name)
            if not 0 <= value < 1 << (8 * size):
                raise EvidenceError(f"QuoteV4 invalid: header {name} does not fit")
            out[offset : offset + size] = value.to_bytes(size, "little")
        for name, _, offset, size in _HEADER_BYTES:
            out[offset : offset + size] = _sized(getattr(self, name), size, name)
        for name, _, offset, size in _BODY_BYTES:
            out[HEADER_SIZE + offset : HEADER_SIZE + offset + size] = _sized(
                getattr(self, name), size, name
            )
        if len(self.rtmrs) != 4:
            raise EvidenceError(f"QuoteV4 invalid: {len(self.rtmrs)} RTMRs, expected 4")
        for i, rtmr in enumerate(self.rtmrs):
            start = HEADER_SIZE + _RTMRS_OFFSET + 48 * i
            out[start : start + 48] = _sized(rtmr, 48, f"RTMR{i}")
        start = HEADER_SIZE + _REPORT_DATA_OFFSET
        out[start : start + 64] = _sized(self.report_data, 64, "report_data")
        return bytes(out)

    def to_abi_bytes(self) -> bytes:
        """The raw quote v4 (go-tdx-guest `abi.QuoteToAbiBytes`), extra bytes appended."""
        self.check()
        cert = (
            self.qe_report.to_abi_bytes()
            + self.qe_report_signature
            + struct.pack("<H", self.qe_auth_data_size)
            + self.qe_auth_data
            + struct.pack("<HI", self.pck_chain_type, self.pck_chain_size)
            + self.pck_chain
        )
        signed = (
            self.signature
            + self.attestation_key
            + struct.pack("<HI", self.certification_data_type, self.certification_data_size)
            + cert
        )
        return (
            self.header_and_body()
            + struct.pack("<I", self.signed_data_size)
            + signed
            + self.extra_bytes
        )

    def check(self) -> None:
        """go-tdx-guest `abi.CheckQuoteV4`: every field has its size and fixed value."""
        problems: list[str] = []
        if self.version != QUOTE_VERSION:
            problems.append(f"version {self.version} is not 4")
        if self.attestation_key_type != ATTESTATION_KEY_TYPE_ECDSA_P256:
            problems.append(f"attestation key type {self.attestation_key_type} is not 2")
        if self.tee_type != TEE_TYPE_TDX:
            problems.append(f"TEE type 0x{self.tee_type:x} is not 0x81")
        for name, _, _, size in (*_HEADER_BYTES, *_BODY_BYTES):
            if len(getattr(self, name)) != size:
                problems.append(f"{name} is {len(getattr(self, name))} bytes, expected {size}")
        if len(self.rtmrs) != 4 or any(len(r) != 48 for r in self.rtmrs):
            problems.append("RTMRs are not four 48-byte values")
        if len(self.report_data) != 64:
            problems.append(f"report_data is {len(self.report_data)} bytes, expected 64")
        if len(self.signature) != 64:
            problems.append(f"signature is {len(self.signature)} bytes, expected 64")
        if len(self.attestation_key) != 64:
            problems.append(f"attestation key is {len(self.attestation_key)} bytes, expected 64")
        if self.certification_data_type != CERT_DATA_QE_REPORT:
            problems.append(f"certification data type {self.certification_data_type} is not 6")
        for name, _, _, size, is_int in _QE_REPORT:
            value = getattr(self.qe_report, name)
            if is_int:
                if not 0 <= value < 1 << (8 * size):
                    problems.append(f"QE report {name} does not fit in {size} bytes")
            elif len(value) != size:
                problems.append(f"QE report {name} is {len(value)} bytes, expected {size}")
        if len(self.qe_report_signature) != 64:
            problems.append("QE report signature is not 64 bytes")
        if self.qe_auth_data_size != len(self.qe_auth_data) or self.qe_auth_data_size > 0xFFFF:
            problems.append(
                f"QE auth data size {self.qe_auth_data_size} is not its length "
                f"{len(self.qe_auth_data)}"
            )
        if self.pck_chain_type != CERT_DATA_PCK_CHAIN:
            problems.append(f"PCK certificate chain data type {self.pck_chain_type} is not 5")
        if self.pck_chain_size != len(self.pck_chain) or self.pck_chain_size >= 1 << 32:
            problems.append(
                f"PCK certificate chain size {self.pck_chain_size} is not its length "
                f"{len(self.pck_chain)}"
            )
        if (
            not 0 <= self.signed_data_size < 1 << 32
            or not 0 <= self.certification_data_size < 1 << 32
        ):
            problems.append("signed/certification data size does not fit in 32 bits")
        # Stricter than go-tdx-guest (which does not compare the sizes with anything): the sizes
        # are unsigned, so a quote whose sizes disagree with its contents is refused outright.
        if not problems:
            cert_size = QE_REPORT_SIZE + 64 + 2 + len(self.qe_auth_data) + 6 + len(self.pck_chain)
            if self.certification_data_size != cert_size:
                problems.append(
                    f"certification data size {self.certification_data_size} is not its length "
                    f"{cert_size}"
                )
            elif self.signed_data_size != 0x86 + cert_size:
                problems.append(
                    f"signed data size {self.signed_data_size} is not its length {0x86 + cert_size}"
                )
        if problems:
            raise EvidenceError("QuoteV4 invalid: " + "; ".join(problems))

    # -- protobuf -----------------------------------------------------------------------------

    @classmethod
    def from_proto(cls, buf: bytes) -> TdxQuote:
        """Decode go-tdx-guest's `QuoteV4` (Contrast's TDX `raw_attestation_doc`)."""
        values: dict[str, Any] = {}
        chunks: dict[int, list[bytes]] = {1: [], 2: [], 4: []}
        for number, wire, value in proto_fields(buf):
            if number in chunks:
                chunks[number].append(expect_bytes(number, wire, value, "QuoteV4 field"))
            elif number == 3:
                values["signed_data_size"] = expect_int(number, wire, value, 32, "signed_data_size")
            elif number == 5:
                values["extra_bytes"] = expect_bytes(number, wire, value, "extra_bytes")
        header = {n: (name, size) for name, n, _, size in _HEADER_INTS}
        header_bytes = {n: name for name, n, _, _ in _HEADER_BYTES}
        for number, wire, value in proto_fields(b"".join(chunks[1])):
            if number in header:
                values[header[number][0]] = expect_int(number, wire, value, 32, header[number][0])
            elif number in header_bytes:
                values[header_bytes[number]] = expect_bytes(
                    number, wire, value, header_bytes[number]
                )
        body = {n: name for name, n, _, _ in _BODY_BYTES}
        rtmrs: list[bytes] = []
        for number, wire, value in proto_fields(b"".join(chunks[2])):
            if number in body:
                values[body[number]] = expect_bytes(number, wire, value, body[number])
            elif number == _RTMRS_FIELD:
                rtmrs.append(expect_bytes(number, wire, value, "rtmrs"))
            elif number == _REPORT_DATA_FIELD:
                values["report_data"] = expect_bytes(number, wire, value, "report_data")
        values["rtmrs"] = tuple(rtmrs)
        certification = b""
        for number, wire, value in proto_fields(b"".join(chunks[4])):
            if number == 1:
                values["signature"] = expect_bytes(number, wire, value, "signature")
            elif number == 2:
                values["attestation_key"] = expect_bytes(number, wire, value, "attestation key")
            elif number == 3:
                certification += expect_bytes(number, wire, value, "certification_data")
        qe_cert = b""
        for number, wire, value in proto_fields(certification):
            if number == 1:
                values["certification_data_type"] = expect_int(number, wire, value, 32, "type")
            elif number == 2:
                values["certification_data_size"] = expect_int(number, wire, value, 32, "size")
            elif number == 3:
                qe_cert += expect_bytes(number, wire, value, "qe_report_certification_data")
        report, auth, chain = b"", b"", b""
        for number, wire, value in proto_fields(qe_cert):
            if number == 1:
                report += expect_bytes(number, wire, value, "qe_report")
            elif number == 2:
                values["qe_report_signature"] = expect_bytes(number, wire, value, "signature")
            elif number == 3:
                auth += expect_bytes(number, wire, value, "qe_auth_data")
            elif number == 4:
                chain += expect_bytes(number, wire, value, "pck_certificate_chain_data")
        values["qe_report"] = EnclaveReport.from_proto(report)
        for number, wire, value in proto_fields(auth):
            if number == 1:
                values["qe_auth_data_size"] = expect_int(number, wire, value, 32, "size")
            elif number == 2:
                values["qe_auth_data"] = expect_bytes(number, wire, value, "data")
        for number, wire, value in proto_fields(chain):
            if number == 1:
                values["pck_chain_type"] = expect_int(number, wire, value, 32, "type")
            elif number == 2:
                values["pck_chain_size"] = expect_int(number, wire, value, 32, "size")
            elif number == 3:
                values["pck_chain"] = expect_bytes(number, wire, value, "pck_cert_chain")
        return cls(**values)

    def to_proto(self) -> bytes:
        header = b"".join(
            enc_uint(n, getattr(self, name)) for name, n, _, _ in _HEADER_INTS
        ) + b"".join(enc_bytes(n, getattr(self, name)) for name, n, _, _ in _HEADER_BYTES)
        body = b"".join(enc_bytes(n, getattr(self, name)) for name, n, _, _ in _BODY_BYTES)
        body += b"".join(enc_bytes(_RTMRS_FIELD, r, always=True) for r in self.rtmrs)
        body += enc_bytes(_REPORT_DATA_FIELD, self.report_data)
        auth = enc_uint(1, self.qe_auth_data_size) + enc_bytes(2, self.qe_auth_data)
        chain = (
            enc_uint(1, self.pck_chain_type)
            + enc_uint(2, self.pck_chain_size)
            + enc_bytes(3, self.pck_chain)
        )
        qe_cert = (
            enc_bytes(1, self.qe_report.to_proto(), always=True)
            + enc_bytes(2, self.qe_report_signature)
            + enc_bytes(3, auth, always=True)
            + enc_bytes(4, chain, always=True)
        )
        certification = (
            enc_uint(1, self.certification_data_type)
            + enc_uint(2, self.certification_data_size)
            + enc_bytes(3, qe_cert, always=True)
        )
        signed = (
            enc_bytes(1, self.signature)
            + enc_bytes(2, self.attestation_key)
            + enc_bytes(3, certification, always=True)
        )
        return (
            enc_bytes(1, header, always=True)
            + enc_bytes(2, body, always=True)
            + enc_uint(3, self.signed_data_size)
            + enc_bytes(4, signed, always=True)
            + enc_bytes(5, self.extra_bytes)
        )


def _sized(value: bytes, size: int, name: str) -> bytes:
    if len(value) != size:
        raise EvidenceError(f"QuoteV4 invalid: {name} is {len(value)} bytes, expected {size}")
    return value


# =============================================================================================
# The PCK certificate chain in the quote
# =============================================================================================

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n(.*?)-----END CERTIFICATE-----\r?\n?", re.DOTALL
)


def pck_chain_certificates(chain: bytes) -> list[bytes]:
    """The PCK leaf, intermediate and root certificates (DER) of a quote's PEM chain.

    Exactly three PEM CERTIFICATE blocks, then nothing or one 0x00 byte (go-tdx-guest
    `extractChainFromQuote`).
    """
    ders: list[bytes] = []
    pos = 0
    for match in _PEM_CERT.finditer(chain):
        if len(ders) == 3:
            break
        if chain[pos : match.start()].strip():
            break
        try:
            # As Go's pem.Decode: spaces, tabs and line breaks inside the base64 are ignored.
            body = match.group(1).translate(None, b" \t\r\n")
            ders.append(base64.b64decode(body, validate=True))
        except (binascii.Error, ValueError):
            break
        pos = match.end()
    if len(ders) != 3:
        raise EvidenceError(
            "incomplete PCK Certificate chain found, should contain 3 concatenated PEM-formatted "
            "'CERTIFICATE'-type block (PCK Leaf Cert||Intermediate CA Cert||Root CA Cert)"
        )
    rest = chain[pos:]
    if rest not in (b"", b"\x00"):
        raise EvidenceError(
            f"unexpected trailing bytes were found in PCK Certificate Chain: {len(rest)} byte(s)"
        )
    return ders


# =============================================================================================
# The PCK certificate's SGX extension (OID 1.2.840.113741.1.13.1)
# =============================================================================================

OID_SGX_EXTENSION = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_SGX = "1.2.840.113741.1.13.1"
_TAG_BOOLEAN, _TAG_ENUMERATED, _TAG_OID = 0x01, 0x0A, 0x06
#: SGX type (ENUMERATED): 0 standard, 1 scalable, 2 scalable with integrity.
SGX_TYPE_SCALABLE_WITH_INTEGRITY = 2


@dataclass(frozen=True)
class PckExtensions:
    """What the PCK certificate says about the platform (go-tdx-guest `pcs.PckExtensions`)."""

    ppid: bytes
    sgx_tcb_components: tuple[int, ...]
    pce_svn: int
    cpu_svn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int
    piid: bytes | None = None
    dynamic_platform: bool | None = None
    cached_keys: bool | None = None
    smt_enabled: bool | None = None


def _oid_text(data: bytes, tlv: Tlv) -> str:
    raw = data[tlv.content : tlv.end]
    if not raw:
        raise EvidenceError("SGX extension: empty OID")
    arcs = [raw[0] // 40 if raw[0] < 80 else 2, raw[0] % 40 if raw[0] < 80 else raw[0] - 80]
    value = 0
    for byte in raw[1:]:
        value = value << 7 | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if raw[-1] & 0x80:
        raise EvidenceError("SGX extension: truncated OID")
    return ".".join(str(a) for a in arcs)


def _pairs(data: bytes, seq: Tlv, what: str) -> Mapping[str, Tlv]:
    """The {OID: value} pairs of a SEQUENCE OF SEQUENCE {OID, value}."""
    if seq.tag != TAG_SEQUENCE:
        raise EvidenceError(f"SGX extension: {what} is not a SEQUENCE")
    out: dict[str, Tlv] = {}
    for item in der_children(data, seq):
        parts = der_children(data, item) if item.tag == TAG_SEQUENCE else []
        if len(parts) != 2 or parts[0].tag != _TAG_OID:
            raise EvidenceError(f"SGX extension: malformed entry in {what}")
        oid = _oid_text(data, parts[0])
        if oid in out:
            raise EvidenceError(f"SGX extension: duplicate {oid} in {what}")
        out[oid] = parts[1]
    return out


def pck_extensions(cert: x509.Certificate) -> PckExtensions:
    """Parse the SGX extension of a PCK certificate (which must have exactly 6 extensions)."""
    if len(cert.extensions) != 6:
        raise EvidenceError(
            f"could not get PCK certificate extensions: PCK certificate has "
            f"{len(cert.extensions)} extensions, expected 6"
        )
    try:
        ext = cert.extensions.get_extension_for_oid(OID_SGX_EXTENSION).value
    except x509.ExtensionNotFound:
        raise EvidenceError("could not get PCK certificate extensions: no SGX extension") from None
    if not isinstance(ext, x509.UnrecognizedExtension):
        raise EvidenceError("could not get PCK certificate extensions: SGX extension not raw")
    data = ext.value
    try:
        top = _pairs(data, der_single(data, TAG_SEQUENCE), "the SGX extension")

        def octets(oid: str, size: int) -> bytes:
            tlv = top.get(f"{_SGX}.{oid}")
            if tlv is None or tlv.tag != TAG_OCTET_STRING or tlv.end - tlv.content != size:
                raise EvidenceError(f"SGX extension: {_SGX}.{oid} is not {size} octets")
            return data[tlv.content : tlv.end]

        tcb_tlv = top.get(f"{_SGX}.2")
        if tcb_tlv is None:
            raise EvidenceError("SGX extension: no TCB")
        tcb = _pairs(data, tcb_tlv, "the TCB")
        components = []
        for i in range(1, 17):
            tlv = tcb.get(f"{_SGX}.2.{i}")
            if tlv is None or tlv.tag != 0x02:
                raise EvidenceError(f"SGX extension: TCB component {i} is missing")
            components.append(der_uint(data, tlv))
        pce_tlv, cpu_tlv = tcb.get(f"{_SGX}.2.17"), tcb.get(f"{_SGX}.2.18")
        if pce_tlv is None or pce_tlv.tag != 0x02:
            raise EvidenceError("SGX extension: PCESVN is missing")
        if (
            cpu_tlv is None
            or cpu_tlv.tag != TAG_OCTET_STRING
            or cpu_tlv.end - cpu_tlv.content != 16
        ):
            raise EvidenceError("SGX extension: CPUSVN is not 16 octets")
        type_tlv = top.get(f"{_SGX}.5")
        if type_tlv is None or type_tlv.tag != _TAG_ENUMERATED:
            raise EvidenceError("SGX extension: SGX type is missing")
        piid = octets("6", 16) if f"{_SGX}.6" in top else None
        flags: dict[str, bool | None] = {"dynamic": None, "cached": None, "smt": None}
        config = top.get(f"{_SGX}.7")
        if config is not None:
            entries = _pairs(data, config, "the configuration")
            for suffix, name in (("1", "dynamic"), ("2", "cached"), ("3", "smt")):
                tlv = entries.get(f"{_SGX}.7.{suffix}")
                if tlv is not None:
                    if tlv.tag != _TAG_BOOLEAN or tlv.end - tlv.content != 1:
                        raise EvidenceError(f"SGX extension: configuration {suffix} not a BOOLEAN")
                    flags[name] = data[tlv.content] != 0
        return PckExtensions(
            ppid=octets("1", 16),
            sgx_tcb_components=tuple(components),
            pce_svn=der_uint(data, pce_tlv),
            cpu_svn=data[cpu_tlv.content : cpu_tlv.end],
            pce_id=octets("3", 2),
            fmspc=octets("4", 6),
            sgx_type=der_uint(data, replace(type_tlv, tag=0x02)),
            piid=piid,
            dynamic_platform=flags["dynamic"],
            cached_keys=flags["cached"],
            smt_enabled=flags["smt"],
        )
    except EvidenceError as exc:
        raise EvidenceError(f"could not get PCK certificate extensions: {exc}") from None


__all__ = [
    "INTEL_QE_VENDOR_ID",
    "EnclaveReport",
    "PckExtensions",
    "TdxQuote",
    "pck_chain_certificates",
    "pck_extensions",
]
