"""Deterministic X-Wing encapsulation for the test vectors (never on the library's API).

An `eseed` (64 bytes: ML-KEM `m` || X25519 ephemeral private key) fixes both halves of the
encapsulation. `cryptography` only encapsulates with fresh randomness, so the ML-KEM half uses the
pure-Python FIPS 203 `Encaps_internal` of `kyber-py` (not constant-time, which doesn't matter for
fixed, public test randomness); its result is checked by the vectors and by `cryptography`'s
decapsulation in the tests.
"""

from __future__ import annotations

import importlib

from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from privatemode_proxy.protocol import ExportContext, _hpke

ESEED_SIZE = 64
_MLKEM_MESSAGE_SIZE = 32


def deterministic_encapsulate(public_key: bytes, eseed: bytes) -> tuple[bytes, bytes]:
    """`xwing_encapsulate` with the randomness `eseed`; returns `(shared_secret, enc)`."""
    assert len(eseed) == ESEED_SIZE, f"eseed must be {ESEED_SIZE} bytes, got {len(eseed)}"
    kyber = importlib.import_module("kyber_py.ml_kem")  # untyped test dependency
    m = eseed[:_MLKEM_MESSAGE_SIZE]

    def encapsulate(key: mlkem.MLKEM768PublicKey) -> tuple[bytes, bytes]:
        shared_secret, ciphertext = kyber.ML_KEM_768._encaps_internal(key.public_bytes_raw(), m)
        return bytes(shared_secret), bytes(ciphertext)

    ephemeral = x25519.X25519PrivateKey.from_private_bytes(eseed[_MLKEM_MESSAGE_SIZE:])
    return _hpke._encapsulate(public_key, ephemeral, encapsulate)


def deterministic_sender_export(
    public_key: bytes, info: bytes, eseed: bytes
) -> tuple[bytes, ExportContext]:
    """`setup_base_sender_export` with the randomness `eseed`; returns `(enc, context)`."""
    return _hpke._sender_export(deterministic_encapsulate(public_key, eseed), info)
