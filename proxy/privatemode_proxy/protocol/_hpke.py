"""HPKE (RFC 9180) base mode with the X-Wing KEM, HKDF-SHA256 and the export-only AEAD.

X-Wing is the hybrid KEM MLKEM768-X25519 (KEM id 0x647a) of draft-connolly-cfrg-xwing-kem and
draft-ietf-hpke-pq, the KEM that Go's ``crypto/hpke.MLKEM768X25519()`` implements and the
Privatemode secret exchange uses. The key pair comes from a 32-byte seed expanded with SHAKE256
into the ML-KEM-768 seed ``d || z`` and the X25519 private key; the shared secret combines both
halves with SHA3-256 under the X-Wing label.

ML-KEM-768, X25519, HKDF and HMAC come from ``cryptography``; SHA3/SHAKE from ``hashlib``.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

__all__ = [
    "XWING_ENC_SIZE",
    "XWING_PUBLIC_KEY_SIZE",
    "XWING_SEED_SIZE",
    "ExportContext",
    "HpkeError",
    "XWingPrivateKey",
    "setup_base_receiver_export",
    "setup_base_sender_export",
    "xwing_encapsulate",
]

_MLKEM768_PUBLIC_KEY_SIZE = 1184
_MLKEM768_CIPHERTEXT_SIZE = 1088
_MLKEM_SEED_SIZE = 64  # d || z (FIPS 203)
_X25519_SIZE = 32

XWING_PUBLIC_KEY_SIZE = _MLKEM768_PUBLIC_KEY_SIZE + _X25519_SIZE  # 1216
XWING_ENC_SIZE = _MLKEM768_CIPHERTEXT_SIZE + _X25519_SIZE  # 1120
XWING_SEED_SIZE = 32
_SHARED_SECRET_SIZE = 32

# The X-Wing combiner label: the six ASCII bytes  \.//^\  (a drawing of a wing).
_XWING_LABEL = b"\\.//^\\"

KEM_XWING = 0x647A
KDF_HKDF_SHA256 = 0x0001
AEAD_EXPORT_ONLY = 0xFFFF

_MODE_BASE = 0x00
_HPKE_VERSION_LABEL = b"HPKE-v1"
_NH = 32  # output size of HKDF-SHA256's hash
_MAX_EXPORT_LENGTH = 255 * _NH  # RFC 9180 §4: L <= 255 * Nh for HKDF


class HpkeError(ValueError):
    """An HPKE/X-Wing operation got malformed input (wrong length, invalid key or ciphertext)."""


# --------------------------------------------------------------------------- key schedule


def _suite_id(kem_id: int, kdf_id: int = KDF_HKDF_SHA256, aead_id: int = AEAD_EXPORT_ONLY) -> bytes:
    """RFC 9180 §5.1: ``"HPKE" || I2OSP(kem_id, 2) || I2OSP(kdf_id, 2) || I2OSP(aead_id, 2)``."""
    return b"HPKE" + struct.pack(">HHH", kem_id, kdf_id, aead_id)


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    labeled_ikm = _HPKE_VERSION_LABEL + suite_id + label + ikm
    # An empty salt means "HashLen zero bytes" for HKDF-Extract; HMAC pads an empty key alike.
    return HKDF.extract(hashes.SHA256(), salt, labeled_ikm)


def _labeled_expand(prk: bytes, suite_id: bytes, label: bytes, info: bytes, length: int) -> bytes:
    if not 0 <= length <= _MAX_EXPORT_LENGTH:
        raise HpkeError(f"HKDF-SHA256 output length must be 0..{_MAX_EXPORT_LENGTH}, got {length}")
    if length == 0:
        # HKDF-Expand of zero bytes is the empty string (Go's hkdf.Expand agrees); cryptography
        # refuses length 0, so answer it here.
        return b""
    labeled_info = struct.pack(">H", length) + _HPKE_VERSION_LABEL + suite_id + label + info
    return HKDFExpand(hashes.SHA256(), length, labeled_info).derive(prk)


@dataclass(frozen=True, repr=False)
class _KeySchedule:
    key_schedule_context: bytes
    secret: bytes
    key: bytes
    base_nonce: bytes
    exporter_secret: bytes


def _key_schedule_base(
    shared_secret: bytes,
    info: bytes,
    *,
    kem_id: int = KEM_XWING,
    kdf_id: int = KDF_HKDF_SHA256,
    aead_id: int = AEAD_EXPORT_ONLY,
    nk: int = 0,
    nn: int = 0,
) -> _KeySchedule:
    """RFC 9180 §5.1 KeySchedule for mode_base (no PSK), with HKDF-SHA256.

    ``nk``/``nn`` are the AEAD's key and nonce sizes: 0 for the export-only AEAD. Other AEAD ids
    are accepted only so that tests can check the schedule against published vectors and
    against another HPKE implementation; the protocol itself uses export-only.
    """
    if kdf_id != KDF_HKDF_SHA256:
        raise HpkeError(f"only HKDF-SHA256 (KDF 0x0001) is supported, got KDF {kdf_id:#06x}")
    if not isinstance(info, (bytes, bytearray, memoryview)):
        raise HpkeError("info must be bytes")
    suite_id = _suite_id(kem_id, kdf_id, aead_id)
    psk_id_hash = _labeled_extract(suite_id, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(suite_id, b"", b"info_hash", bytes(info))
    context = bytes([_MODE_BASE]) + psk_id_hash + info_hash
    # secret = LabeledExtract(salt=shared_secret, "secret", ikm=psk), psk = "" in base mode.
    secret = _labeled_extract(suite_id, shared_secret, b"secret", b"")
    return _KeySchedule(
        key_schedule_context=context,
        secret=secret,
        key=_labeled_expand(secret, suite_id, b"key", context, nk),
        base_nonce=_labeled_expand(secret, suite_id, b"base_nonce", context, nn),
        exporter_secret=_labeled_expand(secret, suite_id, b"exp", context, _NH),
    )


class ExportContext:
    """The secret-export side of an HPKE context (RFC 9180 §5.3).

    With the export-only AEAD this is all an HPKE context can do; sender and receiver derive
    the same values.
    """

    __slots__ = ("_exporter_secret", "_suite_id")

    def __init__(self, exporter_secret: bytes, suite_id: bytes) -> None:
        self._exporter_secret = exporter_secret
        self._suite_id = suite_id

    def export(self, exporter_context: bytes, length: int) -> bytes:
        """``Export(exporter_context, L)``: ``LabeledExpand(exporter_secret, "sec", ctx, L)``."""
        if not isinstance(exporter_context, (bytes, bytearray, memoryview)):
            raise HpkeError("exporter_context must be bytes")
        if isinstance(length, bool) or not isinstance(length, int):
            raise HpkeError("length must be an int")
        return _labeled_expand(
            self._exporter_secret, self._suite_id, b"sec", bytes(exporter_context), length
        )

    def __repr__(self) -> str:
        return "ExportContext(<secret hidden>)"


def _export_context(schedule: _KeySchedule, *, kem_id: int, aead_id: int) -> ExportContext:
    return ExportContext(schedule.exporter_secret, _suite_id(kem_id, KDF_HKDF_SHA256, aead_id))


# --------------------------------------------------------------------------- X-Wing KEM


def _require_bytes(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise HpkeError(f"{what} must be bytes, got {type(value).__name__}")
    data = bytes(value)
    if len(data) != size:
        raise HpkeError(f"{what} must be {size} bytes, got {len(data)}")
    return data


def _combine(ss_mlkem: bytes, ss_x25519: bytes, ct_x25519: bytes, pk_x25519: bytes) -> bytes:
    """X-Wing combiner: ``SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel)``."""
    h = hashlib.sha3_256()
    h.update(ss_mlkem)
    h.update(ss_x25519)
    h.update(ct_x25519)
    h.update(pk_x25519)
    h.update(_XWING_LABEL)
    return h.digest()


def _x25519_exchange(private_key: x25519.X25519PrivateKey, public_bytes: bytes) -> bytes:
    peer = x25519.X25519PublicKey.from_public_bytes(public_bytes)
    try:
        return private_key.exchange(peer)
    except ValueError:
        # A low-order point gives the all-zero shared secret; Go's crypto/ecdh refuses it too.
        raise HpkeError("X25519 exchange failed: low-order public key or ciphertext") from None


class XWingPrivateKey:
    """An X-Wing (MLKEM768-X25519) private key, held as its 32-byte seed."""

    __slots__ = ("_mlkem", "_public_key", "_seed", "_x25519")

    def __init__(self, seed: bytes) -> None:
        seed = _require_bytes(seed, XWING_SEED_SIZE, "X-Wing seed")
        expanded = hashlib.shake_256(seed).digest(_MLKEM_SEED_SIZE + _X25519_SIZE)
        self._seed = seed
        self._mlkem = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:_MLKEM_SEED_SIZE])
        self._x25519 = x25519.X25519PrivateKey.from_private_bytes(expanded[_MLKEM_SEED_SIZE:])
        self._public_key = (
            self._mlkem.public_key().public_bytes_raw()
            + self._x25519.public_key().public_bytes_raw()
        )

    @classmethod
    def generate(cls) -> XWingPrivateKey:
        return cls(os.urandom(XWING_SEED_SIZE))

    @classmethod
    def from_seed(cls, seed: bytes) -> XWingPrivateKey:
        return cls(seed)

    def public_key_bytes(self) -> bytes:
        """``ML-KEM-768 encapsulation key (1184 B) || X25519 public key (32 B)``."""
        return self._public_key

    def decapsulate(self, enc: bytes) -> bytes:
        """Recover the 32-byte shared secret from ``enc`` (``ct_M || ct_X``, 1120 B)."""
        enc = _require_bytes(enc, XWING_ENC_SIZE, "X-Wing encapsulated key")
        ct_mlkem, ct_x25519 = enc[:_MLKEM768_CIPHERTEXT_SIZE], enc[_MLKEM768_CIPHERTEXT_SIZE:]
        ss_mlkem = self._mlkem.decapsulate(ct_mlkem)  # implicit rejection: never raises on content
        ss_x25519 = _x25519_exchange(self._x25519, ct_x25519)
        pk_x25519 = self._public_key[_MLKEM768_PUBLIC_KEY_SIZE:]
        return _combine(ss_mlkem, ss_x25519, ct_x25519, pk_x25519)

    def __repr__(self) -> str:
        return "XWingPrivateKey(<secret hidden>)"


MlKemEncapsulate = Callable[[mlkem.MLKEM768PublicKey], tuple[bytes, bytes]]
"""ML-KEM-768 encapsulation, `(shared_secret, ciphertext)`; fresh randomness unless a test vector
needs the derandomised `Encaps_internal` (the tests supply that one)."""


def _fresh_mlkem_encapsulate(public_key: mlkem.MLKEM768PublicKey) -> tuple[bytes, bytes]:
    return public_key.encapsulate()


def _encapsulate(
    public_key: bytes,
    ephemeral: x25519.X25519PrivateKey,
    mlkem_encapsulate: MlKemEncapsulate,
) -> tuple[bytes, bytes]:
    """X-Wing encapsulation with the given ephemeral X25519 key and ML-KEM encapsulation (the
    seam the deterministic test vectors use; production goes through `xwing_encapsulate`)."""
    public_key = _require_bytes(public_key, XWING_PUBLIC_KEY_SIZE, "X-Wing public key")
    pk_mlkem, pk_x25519 = (
        public_key[:_MLKEM768_PUBLIC_KEY_SIZE],
        public_key[_MLKEM768_PUBLIC_KEY_SIZE:],
    )
    try:
        mlkem_public = mlkem.MLKEM768PublicKey.from_public_bytes(pk_mlkem)
    except ValueError:
        raise HpkeError("invalid ML-KEM-768 encapsulation key in X-Wing public key") from None
    ss_mlkem, ct_mlkem = mlkem_encapsulate(mlkem_public)
    ct_x25519 = ephemeral.public_key().public_bytes_raw()
    ss_x25519 = _x25519_exchange(ephemeral, pk_x25519)
    return _combine(ss_mlkem, ss_x25519, ct_x25519, pk_x25519), ct_mlkem + ct_x25519


def xwing_encapsulate(public_key: bytes) -> tuple[bytes, bytes]:
    """Encapsulate to an X-Wing public key, fresh randomness; returns ``(shared_secret, enc)``."""
    return _encapsulate(public_key, x25519.X25519PrivateKey.generate(), _fresh_mlkem_encapsulate)


# --------------------------------------------------------------------------- HPKE setup


def _sender_export(encapsulated: tuple[bytes, bytes], info: bytes) -> tuple[bytes, ExportContext]:
    shared_secret, enc = encapsulated
    schedule = _key_schedule_base(shared_secret, info)
    return enc, _export_context(schedule, kem_id=KEM_XWING, aead_id=AEAD_EXPORT_ONLY)


def setup_base_sender_export(public_key: bytes, info: bytes = b"") -> tuple[bytes, ExportContext]:
    """HPKE ``SetupBaseS`` (X-Wing, HKDF-SHA256, export-only); returns ``(enc, context)``."""
    return _sender_export(xwing_encapsulate(public_key), info)


def setup_base_receiver_export(
    private_key: XWingPrivateKey, enc: bytes, info: bytes = b""
) -> ExportContext:
    """HPKE ``SetupBaseR`` (X-Wing, HKDF-SHA256, export-only)."""
    if not isinstance(private_key, XWingPrivateKey):
        raise HpkeError(f"private_key must be an XWingPrivateKey, got {type(private_key).__name__}")
    shared_secret = private_key.decapsulate(enc)
    schedule = _key_schedule_base(shared_secret, info)
    return _export_context(schedule, kem_id=KEM_XWING, aead_id=AEAD_EXPORT_ONLY)
