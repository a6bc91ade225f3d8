"""HPKE with the X-Wing KEM: published vectors, Go's accumulated exports, and interop with
cryptography's own HPKE implementation."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hpke_vectors import deterministic_encapsulate, deterministic_sender_export
from privatemode_proxy.protocol import (
    XWING_ENC_SIZE,
    XWING_PUBLIC_KEY_SIZE,
    XWING_SEED_SIZE,
    HpkeError,
    XWingPrivateKey,
    _hpke,
    setup_base_receiver_export,
    setup_base_sender_export,
    xwing_encapsulate,
)

KEM_XWING = 0x647A
KEM_DHKEM_X25519 = 0x0020


@pytest.fixture(scope="module")
def vectors(vectors_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((vectors_dir / "hpke" / "vectors.json").read_text())
    return data


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def _entries(vectors_dir: Path, section: str) -> list[dict[str, Any]]:
    data = json.loads((vectors_dir / "hpke" / "vectors.json").read_text())
    entries: list[dict[str, Any]] = data[section]["entries"]
    return entries


# --------------------------------------------------------------------------- X-Wing KEM vectors


@pytest.mark.parametrize("index", [0, 1, 2])
def test_xwing_kem_vectors(vectors: dict[str, Any], index: int) -> None:
    entries = vectors["xwing_kem"]["entries"]
    assert len(entries) == 3
    v = entries[index]
    key = XWingPrivateKey.from_seed(h(v["seed"]))
    assert key.public_key_bytes() == h(v["pk"])
    assert len(key.public_key_bytes()) == XWING_PUBLIC_KEY_SIZE

    shared_secret, enc = deterministic_encapsulate(h(v["pk"]), h(v["eseed"]))
    assert enc == h(v["ct"])
    assert len(enc) == XWING_ENC_SIZE
    assert shared_secret == h(v["ss"])
    assert key.decapsulate(h(v["ct"])) == h(v["ss"])


# --------------------------------------------------------------------------- hpke-pq (0x647a)


def _shake256_labeled_derive(suite_id: bytes, ikm: bytes, label: bytes, length: int) -> bytes:
    """draft-ietf-hpke-pq LabeledDerive with the one-stage KDF SHAKE256 (context empty)."""
    data = (
        ikm
        + b"HPKE-v1"
        + suite_id
        + struct.pack(">H", len(label))
        + label
        + struct.pack(">H", length)
    )
    return hashlib.shake_256(data).digest(length)


def _derive_key_pair(ikm: bytes) -> XWingPrivateKey:
    """draft-ietf-hpke-pq DeriveKeyPair for MLKEM768-X25519: seed = LabeledDerive(ikm, ...)."""
    suite_id = b"KEM" + struct.pack(">H", KEM_XWING)
    return XWingPrivateKey.from_seed(_shake256_labeled_derive(suite_id, ikm, b"DeriveKeyPair", 32))


def test_hpke_pq_has_both_xwing_entries(vectors: dict[str, Any]) -> None:
    entries = vectors["hpke_pq"]["entries"]
    assert [(e["kem_id"], e["kdf_id"]) for e in entries] == [(KEM_XWING, 1), (KEM_XWING, 0x11)]


@pytest.mark.parametrize("index", [0, 1])
def test_hpke_pq_kem(vectors: dict[str, Any], index: int) -> None:
    """The KEM half of each 0x647a entry (key derivation, encapsulation, decapsulation)."""
    v = vectors["hpke_pq"]["entries"][index]
    assert v["kem_id"] == KEM_XWING and v["mode"] == 0
    derived = _derive_key_pair(h(v["ikmR"]))
    recipient = XWingPrivateKey.from_seed(h(v["skRm"]))
    assert derived.public_key_bytes() == recipient.public_key_bytes() == h(v["pkRm"])

    # Go's test feeds ikmE (64 bytes) to the hybrid KEM as ML-KEM m || X25519 ephemeral key.
    shared_secret, enc = deterministic_encapsulate(h(v["pkRm"]), h(v["ikmE"]))
    assert enc == h(v["enc"])
    assert shared_secret == h(v["shared_secret"])
    assert recipient.decapsulate(h(v["enc"])) == h(v["shared_secret"])


def test_hpke_pq_key_schedule_and_exports(vectors: dict[str, Any]) -> None:
    """Entry with HKDF-SHA256: key schedule and every export (its AEAD is ChaCha20-Poly1305)."""
    v = vectors["hpke_pq"]["entries"][0]
    assert (v["kdf_id"], v["aead_id"]) == (1, 3)
    assert _hpke._suite_id(v["kem_id"], v["kdf_id"], v["aead_id"]) == h(v["suite_id"])
    schedule = _hpke._key_schedule_base(
        h(v["shared_secret"]), h(v["info"]), kem_id=v["kem_id"], aead_id=v["aead_id"], nk=32, nn=12
    )
    assert schedule.key == h(v["key"])
    assert schedule.base_nonce == h(v["base_nonce"])
    assert schedule.exporter_secret == h(v["exporter_secret"])
    context = _hpke._export_context(schedule, kem_id=v["kem_id"], aead_id=v["aead_id"])
    assert len(v["exports"]) == 5
    for export in v["exports"]:
        assert context.export(h(export["exporter_context"]), export["L"]) == h(
            export["exported_value"]
        )


def test_hpke_pq_full_sender_and_receiver_path(vectors: dict[str, Any]) -> None:
    """Sender (deterministic) and receiver agree on the vector's shared secret end to end."""
    v = vectors["hpke_pq"]["entries"][0]
    recipient = XWingPrivateKey.from_seed(h(v["skRm"]))
    enc, sender = deterministic_sender_export(h(v["pkRm"]), h(v["info"]), h(v["ikmE"]))
    assert enc == h(v["enc"])
    receiver = setup_base_receiver_export(recipient, enc, h(v["info"]))
    # Export-only suite id differs from the vector's (aead 0x0003), so compare with the schedule
    # computed from the vector's shared secret under our suite.
    expected = _hpke._export_context(
        _hpke._key_schedule_base(h(v["shared_secret"]), h(v["info"])),
        kem_id=KEM_XWING,
        aead_id=0xFFFF,
    )
    for label in (b"", b"psuedorandom", b"\x00" * 40):
        assert sender.export(label, 32) == receiver.export(label, 32) == expected.export(label, 32)


def test_only_hkdf_sha256_is_supported() -> None:
    with pytest.raises(HpkeError, match="HKDF-SHA256"):
        _hpke._key_schedule_base(b"\x00" * 32, b"", kdf_id=0x11)


# --------------------------------------------------------------------------- RFC 9180 export-only


def _dhkem_x25519_decap(sk_r: bytes, enc: bytes) -> bytes:
    """RFC 9180 §4.1 DHKEM(X25519, HKDF-SHA256).Decap, built on our labeled KDF helpers."""
    suite_id = b"KEM" + struct.pack(">H", KEM_DHKEM_X25519)
    private = x25519.X25519PrivateKey.from_private_bytes(sk_r)
    dh = private.exchange(x25519.X25519PublicKey.from_public_bytes(enc))
    kem_context = enc + private.public_key().public_bytes_raw()
    eae_prk = _hpke._labeled_extract(suite_id, b"", b"eae_prk", dh)
    return _hpke._labeled_expand(eae_prk, suite_id, b"shared_secret", kem_context, 32)


def test_rfc9180_export_only(vectors: dict[str, Any]) -> None:
    v = vectors["rfc9180_export_only"]["entry"]
    assert (v["kem_id"], v["kdf_id"], v["aead_id"]) == (KEM_DHKEM_X25519, 1, 0xFFFF)
    shared_secret = _dhkem_x25519_decap(h(v["skRm"]), h(v["enc"]))
    assert shared_secret == h(v["shared_secret"])
    schedule = _hpke._key_schedule_base(shared_secret, h(v["info"]), kem_id=v["kem_id"])
    assert schedule.key_schedule_context == h(v["key_schedule_context"])
    assert schedule.secret == h(v["secret"])
    assert schedule.key == h(v["key"]) == b""
    assert schedule.base_nonce == h(v["base_nonce"]) == b""
    assert schedule.exporter_secret == h(v["exporter_secret"])
    context = _hpke._export_context(schedule, kem_id=v["kem_id"], aead_id=v["aead_id"])
    assert len(v["exports"]) == 3
    for export in v["exports"]:
        assert context.export(h(export["exporter_context"]), export["L"]) == h(
            export["exported_value"]
        )


def test_go_accumulated_exports(vectors: dict[str, Any]) -> None:
    """Go's crypto/hpke check: 1000 exports, lengths 0..999, contexts drawn from SHAKE128."""
    v = vectors["go_rfc9180_export_only_accumulated"]["entry"]
    assert (v["kem_id"], v["kdf_id"], v["aead_id"]) == (KEM_DHKEM_X25519, 1, 0xFFFF)
    shared_secret = _dhkem_x25519_decap(h(v["skRm"]), h(v["enc"]))
    schedule = _hpke._key_schedule_base(shared_secret, h(v["info"]), kem_id=v["kem_id"])
    context = _hpke._export_context(schedule, kem_id=v["kem_id"], aead_id=v["aead_id"])

    # At most 1000 * (1 + 255) bytes are drawn from the SHAKE128("") stream.
    source = hashlib.shake_128(b"").digest(1000 * 256)
    position = 0
    sink = hashlib.shake_128()
    for length in range(1000):
        n = source[position]
        exporter_context = source[position + 1 : position + 1 + n]
        position += 1 + n
        value = context.export(exporter_context, length)
        assert len(value) == length
        sink.update(value)
    assert sink.digest(16) == h(v["exports_accumulated"])


# --------------------------------------------------------------------------- behaviour


def test_sender_and_receiver_agree() -> None:
    recipient = XWingPrivateKey.generate()
    enc, sender = setup_base_sender_export(recipient.public_key_bytes(), b"info")
    receiver = setup_base_receiver_export(recipient, enc, b"info")
    assert len(enc) == XWING_ENC_SIZE
    assert sender.export(b"", 32) == receiver.export(b"", 32)
    assert sender.export(b"", 32) != sender.export(b"x", 32)
    # A different info gives a different context.
    other = setup_base_receiver_export(recipient, enc, b"other")
    assert other.export(b"", 32) != sender.export(b"", 32)


def test_random_encapsulations_differ_and_decapsulate() -> None:
    recipient = XWingPrivateKey.generate()
    ss1, enc1 = xwing_encapsulate(recipient.public_key_bytes())
    ss2, enc2 = xwing_encapsulate(recipient.public_key_bytes())
    assert enc1 != enc2 and ss1 != ss2
    assert recipient.decapsulate(enc1) == ss1
    assert recipient.decapsulate(enc2) == ss2


def test_deterministic_encapsulation_is_repeatable() -> None:
    recipient = XWingPrivateKey.from_seed(bytes(range(32)))
    eseed = bytes(range(64))
    assert deterministic_encapsulate(
        recipient.public_key_bytes(), eseed
    ) == deterministic_encapsulate(recipient.public_key_bytes(), eseed)
    ss, enc = deterministic_encapsulate(recipient.public_key_bytes(), eseed)
    assert recipient.decapsulate(enc) == ss


def test_from_seed_is_deterministic_and_generate_is_not() -> None:
    seed = os.urandom(XWING_SEED_SIZE)
    assert (
        XWingPrivateKey.from_seed(seed).public_key_bytes()
        == XWingPrivateKey(seed).public_key_bytes()
    )
    assert XWingPrivateKey.generate().public_key_bytes() != (
        XWingPrivateKey.generate().public_key_bytes()
    )


def test_repr_hides_the_seed() -> None:
    seed = bytes(range(32))
    key = XWingPrivateKey.from_seed(seed)
    text = repr(key) + str(key)
    assert seed.hex() not in text and repr(seed) not in text
    _, context = setup_base_sender_export(key.public_key_bytes())
    assert "hidden" in repr(context)


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_wrong_seed_length(size: int) -> None:
    with pytest.raises(HpkeError, match=f"seed must be 32 bytes, got {size}"):
        XWingPrivateKey.from_seed(b"\x01" * size)


def test_seed_must_be_bytes() -> None:
    with pytest.raises(HpkeError, match="must be bytes"):
        XWingPrivateKey.from_seed("00" * 32)  # type: ignore[arg-type]


@pytest.mark.parametrize("delta", [-1, 1, -1216])
def test_wrong_public_key_length(delta: int) -> None:
    pk = XWingPrivateKey.generate().public_key_bytes()
    bad = pk + b"\x00" if delta > 0 else pk[:delta]
    with pytest.raises(HpkeError, match=f"public key must be 1216 bytes, got {len(bad)}"):
        xwing_encapsulate(bad)
    with pytest.raises(HpkeError, match="1216 bytes"):
        setup_base_sender_export(bad)


def test_invalid_mlkem_public_key() -> None:
    pk = bytearray(XWingPrivateKey.generate().public_key_bytes())
    pk[0:2] = b"\xff\xff"  # the first 12-bit coefficient becomes 4095 >= q: fails FIPS 203's check
    with pytest.raises(HpkeError, match="invalid ML-KEM-768"):
        xwing_encapsulate(bytes(pk))
    with pytest.raises(HpkeError, match="invalid ML-KEM-768"):
        deterministic_encapsulate(bytes(pk), bytes(64))


@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_enc_length(delta: int) -> None:
    key = XWingPrivateKey.generate()
    _, enc = xwing_encapsulate(key.public_key_bytes())
    bad = enc + b"\x00" if delta > 0 else enc[:delta]
    with pytest.raises(HpkeError, match=f"encapsulated key must be 1120 bytes, got {len(bad)}"):
        key.decapsulate(bad)
    with pytest.raises(HpkeError, match="1120 bytes"):
        setup_base_receiver_export(key, bad)


def test_public_encapsulation_has_no_randomness_knob() -> None:
    """Deterministic encapsulation lives in the tests (hpke_vectors.py), not on the API."""
    for function in (xwing_encapsulate, setup_base_sender_export):
        assert "eseed" not in inspect.signature(function).parameters


def test_low_order_x25519_ciphertext_is_refused() -> None:
    key = XWingPrivateKey.generate()
    _, enc = xwing_encapsulate(key.public_key_bytes())
    with pytest.raises(HpkeError, match="low-order"):
        key.decapsulate(enc[:-32] + bytes(32))


def test_tampered_enc_gives_a_different_secret() -> None:
    """ML-KEM rejects implicitly: a changed ciphertext decapsulates to an unrelated secret."""
    key = XWingPrivateKey.generate()
    ss, enc = xwing_encapsulate(key.public_key_bytes())
    for index in (0, 500, 1087, 1090):
        tampered = bytearray(enc)
        tampered[index] ^= 0x01
        assert key.decapsulate(bytes(tampered)) != ss


@pytest.mark.parametrize("length", [-1, 255 * 32 + 1])
def test_export_length_bounds(length: int) -> None:
    key = XWingPrivateKey.generate()
    _, context = setup_base_sender_export(key.public_key_bytes())
    with pytest.raises(HpkeError, match=r"0\.\.8160"):
        context.export(b"", length)
    assert len(context.export(b"", 255 * 32)) == 255 * 32
    assert context.export(b"", 0) == b""


def test_export_argument_types() -> None:
    _, context = setup_base_sender_export(XWingPrivateKey.generate().public_key_bytes())
    with pytest.raises(HpkeError, match="exporter_context must be bytes"):
        context.export("", 32)  # type: ignore[arg-type]
    with pytest.raises(HpkeError, match="length must be an int"):
        context.export(b"", 32.0)  # type: ignore[arg-type]


def test_receiver_needs_a_private_key() -> None:
    with pytest.raises(HpkeError, match="XWingPrivateKey"):
        setup_base_receiver_export(b"\x00" * 32, b"\x00" * 1120)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- interop


def _their_private_key(seed: bytes) -> hpke.MLKEM768X25519PrivateKey:
    """cryptography's MLKEM768-X25519 key for our seed, built from the X-Wing expansion."""
    expanded = hashlib.shake_256(seed).digest(96)
    return hpke.MLKEM768X25519PrivateKey(
        mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]),
        x25519.X25519PrivateKey.from_private_bytes(expanded[64:]),
    )


def _their_public_key(public_key: bytes) -> hpke.MLKEM768X25519PublicKey:
    return hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(public_key[:1184]),
        x25519.X25519PublicKey.from_public_bytes(public_key[1184:]),
    )


_AEADS = [
    pytest.param(hpke.AEAD.AES_256_GCM, 0x0002, 32, AESGCM, id="aes-256-gcm"),
    pytest.param(hpke.AEAD.AES_128_GCM, 0x0001, 16, AESGCM, id="aes-128-gcm"),
    pytest.param(hpke.AEAD.CHACHA20_POLY1305, 0x0003, 32, ChaCha20Poly1305, id="chacha20"),
]


@pytest.mark.parametrize(("aead", "aead_id", "nk", "cipher"), _AEADS)
def test_interop_their_encapsulation_our_decapsulation(
    aead: hpke.AEAD, aead_id: int, nk: int, cipher: Any
) -> None:
    """cryptography's Suite seals to our public key; our KEM + key schedule open it.

    Its Suite only offers single-shot seal/open (no export), so the check is at that level:
    decapsulation, and key/base_nonce from the same `secret` the exporter secret comes from.
    """
    key = XWingPrivateKey.generate()
    suite = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, aead)
    info, plaintext = b"interop info", b"sealed by pyca/cryptography"
    sealed = suite.encrypt(plaintext, _their_public_key(key.public_key_bytes()), info=info)
    enc, ciphertext = sealed[:XWING_ENC_SIZE], sealed[XWING_ENC_SIZE:]
    shared_secret = key.decapsulate(enc)
    schedule = _hpke._key_schedule_base(shared_secret, info, aead_id=aead_id, nk=nk, nn=12)
    assert cipher(schedule.key).decrypt(schedule.base_nonce, ciphertext, b"") == plaintext


@pytest.mark.parametrize(("aead", "aead_id", "nk", "cipher"), _AEADS)
def test_interop_our_encapsulation_their_decapsulation(
    aead: hpke.AEAD, aead_id: int, nk: int, cipher: Any
) -> None:
    """We encapsulate and seal (first message, sequence 0); cryptography's Suite opens it."""
    seed = os.urandom(32)
    key = XWingPrivateKey.from_seed(seed)
    suite = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, aead)
    info, plaintext = b"interop info", b"sealed by privatemode_proxy"
    shared_secret, enc = xwing_encapsulate(key.public_key_bytes())
    schedule = _hpke._key_schedule_base(shared_secret, info, aead_id=aead_id, nk=nk, nn=12)
    ciphertext = cipher(schedule.key).encrypt(schedule.base_nonce, plaintext, b"")
    assert suite.decrypt(enc + ciphertext, _their_private_key(seed), info=info) == plaintext
    # And with a wrong info their side refuses, so the check above is not vacuous.
    with pytest.raises(Exception):  # noqa: B017 - cryptography raises InvalidTag here
        suite.decrypt(enc + ciphertext, _their_private_key(seed), info=b"other")


def test_interop_their_encapsulation_to_a_derived_key(vectors: dict[str, Any]) -> None:
    """cryptography seals to the hpke-pq vector's recipient key; we open with our key."""
    v = vectors["hpke_pq"]["entries"][0]
    key = XWingPrivateKey.from_seed(h(v["skRm"]))
    suite = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    sealed = suite.encrypt(b"x", _their_public_key(h(v["pkRm"])))
    schedule = _hpke._key_schedule_base(
        key.decapsulate(sealed[:XWING_ENC_SIZE]), b"", aead_id=0x0002, nk=32, nn=12
    )
    assert AESGCM(schedule.key).decrypt(schedule.base_nonce, sealed[XWING_ENC_SIZE:], b"") == b"x"
