"""Contrast's attestation response, Privatemode's wrapper, report data and the ID-key digest.

The Coordinator answers `/attest` with a Contrast `AttestationResponse` (JSON); Privatemode wraps
it as ``{"AttestationDoc": b64}``. The TEE evidence inside binds the nonce and the manifest
history through REPORT_DATA (`report_data`). For SEV-SNP, Contrast launches with a fixed ID block
whose ID key is recovered from a constant signature (`id_key_digest`). shared/docs/
attestation.md §1.1, §1.2, §2 and §7.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ._errors import EvidenceError
from ._gojson import (
    go_b64,
    go_b64e,
    go_dumps,
    go_int,
    go_items,
    go_list,
    go_loads,
    go_object,
    go_string,
)

#: `attestation_type` OIDs as Go's `asn1.ObjectIdentifier` ([]int).
SNP_ATTESTATION_TYPE: tuple[int, ...] = (1, 3, 9901, 2, 1)
TDX_ATTESTATION_TYPE: tuple[int, ...] = (1, 3, 9901, 2, 2)

#: Contrast's ID block FAMILY_ID / IMAGE_ID (v1.20); reports echo them.
CONTRAST_FAMILY_ID = b"\x01" + bytes(15)
CONTRAST_IMAGE_ID = b"\x02" + bytes(15)


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
        obj = go_object(go_loads(data, "attestation response"), "attestation response")
        oid = go_list(obj.get("attestation_type"), "attestation_type")
        for arc in oid:
            go_int(arc, "attestation_type element")
        return cls(
            version=go_string(obj.get("version"), "version"),
            raw_attestation_doc=go_b64(obj.get("raw_attestation_doc"), "raw_attestation_doc"),
            attestation_type=tuple(oid),
            manifests=go_items(obj.get("manifests"), "manifests", go_b64),
            policies=go_items(obj.get("policies"), "policies", go_b64),
            root_ca=go_b64(obj.get("root_ca"), "root_ca"),
            mesh_ca=go_b64(obj.get("mesh_ca"), "mesh_ca"),
        )

    def to_json(self) -> bytes:
        return go_dumps(
            {
                "version": self.version,
                "raw_attestation_doc": go_b64e(self.raw_attestation_doc),
                "attestation_type": list(self.attestation_type),
                "manifests": [go_b64e(m) for m in self.manifests],
                "policies": [go_b64e(p) for p in self.policies],
                "root_ca": go_b64e(self.root_ca),
                "mesh_ca": go_b64e(self.mesh_ca),
            }
        )


def encode_attest_response(attestation_doc: bytes) -> bytes:
    """Privatemode's `/privatemode/v1/attest` response body: ``{"AttestationDoc": b64}``."""
    return go_dumps({"AttestationDoc": go_b64e(attestation_doc)})


def decode_attest_response(body: bytes) -> bytes:
    """The Contrast response bytes inside a Privatemode `/attest` response body."""
    obj = go_object(go_loads(body, "attest response"), "attest response")
    doc = go_b64(obj.get("AttestationDoc"), "AttestationDoc")
    if not doc:
        raise EvidenceError("attest response has no AttestationDoc")
    return doc


def encode_attest_request(nonce: bytes) -> bytes:
    """Privatemode's `/privatemode/v1/attest` request body: ``{"Nonce": b64}``."""
    return go_dumps({"Nonce": go_b64e(nonce)})


def decode_attest_request(body: bytes) -> bytes:
    """The nonce of an attest request; it must be 32 bytes."""
    obj = go_object(go_loads(body, "attest request"), "attest request")
    nonce = go_b64(obj.get("Nonce"), "Nonce")
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
        if q is not None and _verifies(q, id_block):
            candidates.append(q)
    if not candidates:
        raise EvidenceError("ID key recovery failed")
    return min(candidates)


def _verifies(public_key: tuple[int, int], id_block: bytes) -> bool:
    """Whether `public_key` verifies Contrast's constant signature over `id_block`."""
    try:
        key = ec.EllipticCurvePublicNumbers(*public_key, ec.SECP384R1()).public_key()
        key.verify(
            encode_dss_signature(*CONTRAST_ID_SIGNATURE), id_block, ec.ECDSA(hashes.SHA384())
        )
    except (ValueError, InvalidSignature):
        return False
    return True


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
