"""AMD SEV-SNP evidence: the ATTESTATION_REPORT and go-sev-guest's `sevsnp.Attestation`.

The report's fields (TCB_VERSION, guest POLICY, PLATFORM_INFO, signer info, CPUID), the raw
0x4A0-byte ABI layout and the protobuf form Contrast sends, both ways. Pure: bytes in,
structures out (and back); malformed input raises `EvidenceError`. shared/docs/attestation.md
§1.3 and §4 describe the formats.

Over 600 lines on purpose: the report's layout is one table of offsets read by both encodings;
split, the ABI and protobuf forms could drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from ._errors import EvidenceError
from ._protobuf import enc_bytes, enc_uint, expect_bytes, expect_int, proto_fields

REPORT_SIZE = 0x4A0
SIGNED_REPORT_SIZE = 0x2A0
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1

#: `CertificateChain.extras` key under which Contrast attaches the product line's CRL (DER).
CRL_EXTRA_KEY = "00569ee4-e480-4fba-bbf4-45b629901180"

MILAN, GENOA, TURIN, UNKNOWN_PRODUCT = "Milan", "Genoa", "Turin", "Unknown"
#: `SevProduct.name` enum values.
SEV_PRODUCT_NAMES = {0: UNKNOWN_PRODUCT, 1: MILAN, 2: GENOA, 3: TURIN}
SEV_PRODUCT_ENUM = {name: number for number, name in SEV_PRODUCT_NAMES.items()}


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


class _FlagBits:
    """Booleans that are bits of one word: `_FLAGS` rows are (attribute, bit, JSON name)."""

    _FLAGS: ClassVar[tuple[tuple[str, int, str], ...]]

    @classmethod
    def _flags_of(cls, value: int) -> dict[str, bool]:
        return {name: bool(value >> bit & 1) for name, bit, _ in cls._FLAGS}

    def _flag_bits(self) -> int:
        value = 0
        for name, bit, _ in self._FLAGS:
            if getattr(self, name):
                value |= 1 << bit
        return value

    def _flags_json(self) -> dict[str, Any]:
        return {json_name: getattr(self, name) for name, _, json_name in self._FLAGS}


@dataclass(frozen=True)
class GuestPolicy(_FlagBits):
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
        return cls(abi_minor=value & 0xFF, abi_major=value >> 8 & 0xFF, **cls._flags_of(value))

    def to_int(self) -> int:
        """go-sev-guest `SnpPolicyToBytes`: ABI minor/major, bit 17, and the flag bits."""
        return (self.abi_minor & 0xFF) | (self.abi_major & 0xFF) << 8 | 1 << 17 | self._flag_bits()

    def to_json_obj(self) -> dict[str, Any]:
        return {"ABIMinor": self.abi_minor, "ABIMajor": self.abi_major, **self._flags_json()}


@dataclass(frozen=True)
class PlatformInfo(_FlagBits):
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
        return cls(**cls._flags_of(value))

    def to_int(self) -> int:
        return self._flag_bits()

    def to_json_obj(self) -> dict[str, Any]:
        return self._flags_json()


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
# The SEV-SNP report and the sevsnp.Attestation message
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
        for number, wire, value in proto_fields(buf):
            if number in _INT_BY_FIELD:
                name, size = _INT_BY_FIELD[number]
                values[name] = expect_int(number, wire, value, 64 if size == 8 else 32, name)
            elif number in _BYTES_BY_FIELD:
                name, _ = _BYTES_BY_FIELD[number]
                values[name] = expect_bytes(number, wire, value, name)
            elif number == _CPUID_FIELD:
                values["cpuid1eax_fms"] = expect_int(number, wire, value, 32, "cpuid1eax_fms")
        return cls(**values)

    def to_proto(self) -> bytes:
        parts: list[tuple[int, bytes]] = []
        for name, number, _, _ in _REPORT_INTS:
            parts.append((number, enc_uint(number, getattr(self, name))))
        for name, number, _, _ in _REPORT_BYTES:
            parts.append((number, enc_bytes(number, getattr(self, name))))
        parts.append((_CPUID_FIELD, enc_uint(_CPUID_FIELD, self.cpuid1eax_fms)))
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
        for number, wire, value in proto_fields(buf):
            if number in names:
                values[names[number]] = expect_bytes(number, wire, value, names[number])
            elif number == 7:
                entry = expect_bytes(number, wire, value, "extras entry")
                key, item = "", b""
                for enumber, ewire, evalue in proto_fields(entry):
                    if enumber == 1:
                        raw_key = expect_bytes(enumber, ewire, evalue, "extras key")
                        try:
                            key = raw_key.decode("utf-8")
                        except UnicodeDecodeError:
                            raise EvidenceError("protobuf: extras key is not UTF-8") from None
                    elif enumber == 2:
                        item = expect_bytes(enumber, ewire, evalue, "extras value")
                extras[key] = item
        return cls(extras=extras, **values)

    def to_proto(self) -> bytes:
        out = (
            enc_bytes(1, self.vcek_cert)
            + enc_bytes(2, self.ask_cert)
            + enc_bytes(3, self.ark_cert)
            + enc_bytes(4, self.firmware_cert)
            + enc_bytes(6, self.vlek_cert)
        )
        for key in sorted(self.extras):
            entry = enc_bytes(1, key.encode("utf-8")) + enc_bytes(2, self.extras[key])
            out += enc_bytes(7, entry, always=True)
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
        for number, wire, value in proto_fields(buf):
            if number == 1:
                name = expect_int(number, wire, value, 64, "product name")
                if name >= 1 << 63:  # negative int32 enum values arrive sign-extended
                    name -= 1 << 64
            elif number == 2:
                stepping = expect_int(number, wire, value, 32, "stepping")
            elif number == 3:
                inner = expect_bytes(number, wire, value, "machine_stepping")
                machine = machine or 0
                for inumber, iwire, ivalue in proto_fields(inner):
                    if inumber == 1:
                        machine = expect_int(inumber, iwire, ivalue, 32, "machine_stepping")
        return cls(name=name, stepping=stepping, machine_stepping=machine)

    def to_proto(self) -> bytes:
        out = enc_uint(1, self.name) + enc_uint(2, self.stepping)
        if self.machine_stepping is not None:
            out += enc_bytes(3, enc_uint(1, self.machine_stepping), always=True)
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
        for number, wire, value in proto_fields(buf):
            if number in chunks:
                chunks[number].append(expect_bytes(number, wire, value, "Attestation field"))
        report = SnpReport.from_proto(b"".join(chunks[1])) if chunks[1] else None
        chain = CertificateChain.from_proto(b"".join(chunks[2])) if chunks[2] else None
        product = SevProduct.from_proto(b"".join(chunks[3])) if chunks[3] else None
        return cls(report=report, certificate_chain=chain, product=product)

    def to_proto(self) -> bytes:
        out = b""
        if self.report is not None:
            out += enc_bytes(1, self.report.to_proto(), always=True)
        if self.certificate_chain is not None:
            out += enc_bytes(2, self.certificate_chain.to_proto(), always=True)
        if self.product is not None:
            out += enc_bytes(3, self.product.to_proto(), always=True)
        return out
