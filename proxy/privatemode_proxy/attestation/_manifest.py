"""Contrast's manifest (v1.20 layout): policies and the SNP/TDX reference values.

Decoded as Go decodes it (`_gojson`), checked as Contrast's `Manifest.Validate()` checks it.
Keep a manifest's raw bytes for hashing; never re-serialize one to compare it.
shared/docs/attestation.md §1.4.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ._errors import EvidenceError, ManifestError
from ._gojson import (
    GoObject,
    go_bool,
    go_dumps,
    go_int,
    go_items,
    go_loads,
    go_object,
    go_string,
    go_uint,
)
from ._snp import GENOA, MILAN, GuestPolicy, PlatformInfo, TcbParts
from ._x509 import pem_encode

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


def _json_flags(
    obj: GoObject, flags: tuple[tuple[str, int, str], ...], what: str
) -> dict[str, bool]:
    """The flag attributes of `GuestPolicy` / `PlatformInfo` from their manifest JSON names."""
    return {
        name: go_bool(obj.get(json_name), f"{what}.{json_name}") for name, _, json_name in flags
    }


def _guest_policy(value: Any, what: str) -> GuestPolicy:
    obj = go_object(value, what)
    flags = _json_flags(obj, GuestPolicy._FLAGS, what)  # first, as before: same first error
    return GuestPolicy(
        abi_minor=go_uint(obj.get("ABIMinor"), 8, f"{what}.ABIMinor"),
        abi_major=go_uint(obj.get("ABIMajor"), 8, f"{what}.ABIMajor"),
        **flags,
    )


def _platform_info(value: Any, what: str) -> PlatformInfo:
    return PlatformInfo(**_json_flags(go_object(value, what), PlatformInfo._FLAGS, what))


def _strings(value: Any, what: str) -> tuple[str, ...]:
    return go_items(value, what, go_string)


def _snp_reference_values(value: Any, what: str) -> SnpReferenceValues:
    obj = go_object(value, what)
    tcb = go_object(obj.get("MinimumTCB"), f"{what}.MinimumTCB")
    minimum = MinimumTcb(
        **{
            name: _svn(tcb.get(json_name), f"{what}.MinimumTCB.{json_name}")
            for name, json_name in MinimumTcb._JSON
        }
    )
    return SnpReferenceValues(
        product_name=go_string(obj.get("ProductName"), f"{what}.ProductName"),
        trusted_measurement=go_string(obj.get("TrustedMeasurement"), f"{what}.TrustedMeasurement"),
        minimum_tcb=minimum,
        guest_policy=_guest_policy(obj.get("GuestPolicy"), f"{what}.GuestPolicy"),
        platform_info=_platform_info(obj.get("PlatformInfo"), f"{what}.PlatformInfo"),
        minimum_mitigation_vector=go_uint(
            obj.get("MinimumMitigationVector"), 64, f"{what}.MinimumMitigationVector"
        ),
        allowed_chip_ids=_strings(obj.get("AllowedChipIDs"), f"{what}.AllowedChipIDs"),
        platform=go_string(obj.get("Platform"), f"{what}.Platform"),
        cpus=go_uint(obj.get("CPUs"), 64, f"{what}.CPUs"),
    )


def _tdx_reference_values(value: Any, what: str) -> TdxReferenceValues:
    obj = go_object(value, what)
    rtmrs = list(_strings(obj.get("Rtmrs"), f"{what}.Rtmrs")[:4])
    rtmrs += [""] * (4 - len(rtmrs))  # Go decodes into a [4]HexString array
    return TdxReferenceValues(
        platform=go_string(obj.get("Platform"), f"{what}.Platform"),
        min_tcb_evaluation_data_number=go_int(
            obj.get("MinTCBEvaluationDataNumber"), f"{what}.MinTCBEvaluationDataNumber"
        ),
        mr_td=go_string(obj.get("MrTd"), f"{what}.MrTd"),
        mr_seam=go_string(obj.get("MrSeam"), f"{what}.MrSeam"),
        rtmrs=(rtmrs[0], rtmrs[1], rtmrs[2], rtmrs[3]),
        xfam=go_string(obj.get("Xfam"), f"{what}.Xfam"),
        allowed_piids=_strings(obj.get("AllowedPIIDs"), f"{what}.AllowedPIIDs"),
        memory_integrity=go_bool(obj.get("MemoryIntegrity"), f"{what}.MemoryIntegrity"),
        smt_disabled=go_bool(obj.get("SMTDisabled"), f"{what}.SMTDisabled"),
        static_platform=go_bool(obj.get("StaticPlatform"), f"{what}.StaticPlatform"),
    )


def hex_bytes(text: str, size: int) -> bytes | None:
    """Decode hex (either case, like Go's hex.DecodeString) of exactly `size` bytes, else None."""
    if len(text) != 2 * size or not all(c in _HEX_DIGITS for c in text):
        return None
    return bytes.fromhex(text)


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
            obj = go_object(go_loads(data, "manifest"), "manifest")
            policies: dict[str, PolicyEntry] = {}
            policies_obj = go_object(obj.get("Policies"), "Policies")
            for key, value in policies_obj.pairs:  # Go maps: exact keys, the last one wins
                entry = go_object(value, f"Policies[{key}]")
                policies[key] = PolicyEntry(
                    sans=_strings(entry.get("SANs"), f"Policies[{key}].SANs"),
                    workload_secret_id=go_string(
                        entry.get("WorkloadSecretID"), f"Policies[{key}].WorkloadSecretID"
                    ),
                    role=go_string(entry.get("Role"), f"Policies[{key}].Role"),
                )
            refs = go_object(obj.get("ReferenceValues"), "ReferenceValues")
            snp = go_items(refs.get("snp"), "snp", _snp_reference_values)
            tdx = go_items(refs.get("tdx"), "tdx", _tdx_reference_values)
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
        return go_dumps(
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
