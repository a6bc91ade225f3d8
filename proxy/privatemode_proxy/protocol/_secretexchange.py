"""The secret exchange of ``POST /privatemode/v1/secret`` (protocol §2), both sides.

The client sends a fresh X-Wing public key; the server encapsulates to it (HPKE base mode,
export-only), signs ``SHA-256(PublicKey || EncapsulatedKey)`` with the key of a certificate
issued by its mesh CA, and both sides export the 32-byte secret with
``Export(exporter_context="", L=32)``. The secret's ID is base64(SHA-256(PublicKey)).

Bodies are JSON as Go's ``encoding/json`` writes the official structs: capitalised field names,
``[]byte`` as padded standard base64.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import ExtendedKeyUsageOID

from ._hpke import (
    HpkeError,
    XWingPrivateKey,
    setup_base_receiver_export,
    setup_base_sender_export,
)

__all__ = [
    "ClientSecretExchange",
    "Secret",
    "SecretExchangeError",
    "exchange_digest",
    "secret_id_for",
    "serve_secret_exchange",
    "sign_exchange",
    "verify_exchange",
]

SECRET_SIZE = 32
_EXPORTER_CONTEXT = b""
_HPKE_INFO = b""
_ECDSA_PREHASHED_SHA256 = ec.ECDSA(Prehashed(hashes.SHA256()))


class SecretExchangeError(ValueError):
    """The secret exchange failed: bad body, untrusted certificate, bad signature or key."""


@dataclass(frozen=True, repr=False)
class Secret:
    """An exchanged inference secret: its ID (sent in the clear) and the 32-byte key."""

    id: str
    key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("Secret.id must be a non-empty string")
        if not isinstance(self.key, bytes) or len(self.key) != SECRET_SIZE:
            raise ValueError(f"Secret.key must be {SECRET_SIZE} bytes")

    def __repr__(self) -> str:
        return f"Secret(id={self.id!r}, key=<hidden>)"


def secret_id_for(public_key: bytes) -> str:
    """The secret ID: standard base64 (padded) of SHA-256 of the client's public key."""
    return base64.b64encode(hashlib.sha256(public_key).digest()).decode("ascii")


def exchange_digest(public_key: bytes, enc: bytes) -> bytes:
    """``SHA-256(PublicKey || EncapsulatedKey)``: the 32 bytes the server signs."""
    digest = hashlib.sha256()
    digest.update(public_key)
    digest.update(enc)
    return digest.digest()


def sign_exchange(mesh_key: ec.EllipticCurvePrivateKey, public_key: bytes, enc: bytes) -> bytes:
    """ASN.1 (DER) ECDSA signature over the exchange digest, signed as a pre-hashed SHA-256."""
    if not isinstance(mesh_key, ec.EllipticCurvePrivateKey):
        raise TypeError("mesh_key must be an ECDSA private key")
    return mesh_key.sign(exchange_digest(public_key, enc), _ECDSA_PREHASHED_SHA256)


#: Certificate attributes cryptography decodes only on first access, and what they are.
_LAZY_FIELDS = (
    ("subject", "subject name"),
    ("issuer", "issuer name"),
    ("not_valid_before_utc", "validity period"),
    ("not_valid_after_utc", "validity period"),
    ("extensions", "extension"),
)


def _check_fields(cert: x509.Certificate, what: str) -> None:
    # cryptography decodes names, validity and extensions on first access, and raises a bare
    # ValueError (or DuplicateExtension) then. Decode them all here, before anything reads them,
    # so a malformed field is a SecretExchangeError naming it (without the parser's dump).
    for part, label in _LAZY_FIELDS:
        try:
            getattr(cert, part)
        except (ValueError, x509.DuplicateExtension):
            raise SecretExchangeError(f"{what} has a malformed {label}") from None


def _name_text(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except ValueError:
        return "<a name that cannot be printed>"


def _check_validity(cert: x509.Certificate, now: datetime, what: str) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise SecretExchangeError(
            f"{what} is not valid at {now.isoformat()} (valid "
            f"{cert.not_valid_before_utc.isoformat()} to {cert.not_valid_after_utc.isoformat()})"
        )


def _check_server_auth_usage(cert: x509.Certificate, what: str) -> None:
    # Go's x509.Verify with default options requires server-auth usage along the chain, where
    # a certificate restricts its extended key usage at all.
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if (
        ExtendedKeyUsageOID.SERVER_AUTH not in usage
        and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usage
    ):
        raise SecretExchangeError(f"{what} is not valid for server authentication")


def verify_exchange(
    mesh_ca: x509.Certificate,
    mesh_cert_der: bytes,
    public_key: bytes,
    enc: bytes,
    signature: bytes,
    *,
    now: datetime | None = None,
) -> None:
    """Check that ``mesh_cert_der`` is issued by ``mesh_ca`` and signed the exchange.

    The certificate must be signed directly by the mesh CA, both must be valid at ``now``
    (default: the current time), the certificate's key must be ECDSA, and ``signature`` must be
    its ASN.1 ECDSA signature over ``SHA-256(public_key || enc)`` (verified as pre-hashed).
    Raises :class:`SecretExchangeError` on any failure.
    """
    if not isinstance(mesh_ca, x509.Certificate):
        raise SecretExchangeError("mesh CA must be an x509.Certificate")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise SecretExchangeError("now must be timezone-aware")
    _check_fields(mesh_ca, "mesh CA certificate")
    try:
        cert = x509.load_der_x509_certificate(bytes(mesh_cert_der))
    except (ValueError, TypeError):
        raise SecretExchangeError("MeshCert is not a DER X.509 certificate") from None
    _check_fields(cert, "MeshCert")
    try:
        cert.verify_directly_issued_by(mesh_ca)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        raise SecretExchangeError(
            "MeshCert is not issued by the attested mesh CA "
            f"(issuer {_name_text(cert.issuer)!r}, CA {_name_text(mesh_ca.subject)!r})"
        ) from None
    _check_validity(mesh_ca, now, "mesh CA certificate")
    _check_validity(cert, now, "MeshCert")
    _check_server_auth_usage(mesh_ca, "mesh CA certificate")
    _check_server_auth_usage(cert, "MeshCert")
    try:
        mesh_public_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise SecretExchangeError("MeshCert's public key does not parse") from None
    if not isinstance(mesh_public_key, ec.EllipticCurvePublicKey):
        raise SecretExchangeError("MeshCert's key is not ECDSA")
    try:
        mesh_public_key.verify(
            bytes(signature), exchange_digest(public_key, enc), _ECDSA_PREHASHED_SHA256
        )
    except InvalidSignature:
        raise SecretExchangeError("signature over the secret exchange does not verify") from None


# --------------------------------------------------------------------------- JSON bodies


def _load_json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(body)
    except (orjson.JSONDecodeError, TypeError):
        raise SecretExchangeError(f"{what} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise SecretExchangeError(f"{what} must be a JSON object")
    return obj


def _bytes_field(obj: dict[str, Any], name: str, what: str) -> bytes:
    value = obj.get(name)
    if value is None:
        # Go's encoding/json matches field names case-insensitively; so do we, after an
        # exact match.
        folded = name.lower()
        value = next((v for k, v in obj.items() if k.lower() == folded), None)
    if not isinstance(value, str):
        raise SecretExchangeError(f"{what} lacks the base64 string field {name!r}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SecretExchangeError(f"{what} field {name!r} is not standard base64") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class ClientSecretExchange:
    """Client side of one secret exchange: a fresh key pair, the request, and the check.

    ``private_key`` is for tests; by default a new key pair is generated.
    """

    __slots__ = ("_private_key", "_public_key")

    def __init__(self, private_key: XWingPrivateKey | None = None) -> None:
        self._private_key = private_key if private_key is not None else XWingPrivateKey.generate()
        self._public_key = self._private_key.public_key_bytes()

    @property
    def public_key(self) -> bytes:
        return self._public_key

    @property
    def secret_id(self) -> str:
        return secret_id_for(self._public_key)

    def request_body(self) -> bytes:
        """``{"PublicKey": "<base64>"}``."""
        return orjson.dumps({"PublicKey": _b64(self._public_key)})

    def complete(
        self,
        response_body: bytes,
        mesh_ca: x509.Certificate,
        *,
        now: datetime | None = None,
    ) -> Secret:
        """Verify the server's answer against the attested mesh CA and export the secret."""
        obj = _load_json_object(response_body, "secret response")
        enc = _bytes_field(obj, "EncapsulatedKey", "secret response")
        signature = _bytes_field(obj, "Signature", "secret response")
        mesh_cert = _bytes_field(obj, "MeshCert", "secret response")
        verify_exchange(mesh_ca, mesh_cert, self._public_key, enc, signature, now=now)
        try:
            context = setup_base_receiver_export(self._private_key, enc, _HPKE_INFO)
        except HpkeError as exc:
            raise SecretExchangeError(f"EncapsulatedKey rejected: {exc}") from None
        key = context.export(_EXPORTER_CONTEXT, SECRET_SIZE)
        return Secret(id=self.secret_id, key=key)

    def __repr__(self) -> str:
        return f"ClientSecretExchange(secret_id={self.secret_id!r})"


def serve_secret_exchange(
    request_body: bytes, mesh_key: ec.EllipticCurvePrivateKey, mesh_cert_der: bytes
) -> tuple[bytes, Secret]:
    """Server side: answer a secret request; returns the response body and the secret.

    The response is ``{"EncapsulatedKey", "Signature", "MeshCert"}`` (base64), with
    ``MeshCert`` the DER certificate of ``mesh_key``, issued by the mesh CA.
    """
    obj = _load_json_object(request_body, "secret request")
    public_key = _bytes_field(obj, "PublicKey", "secret request")
    try:
        enc, context = setup_base_sender_export(public_key, _HPKE_INFO)
    except HpkeError as exc:
        raise SecretExchangeError(f"PublicKey rejected: {exc}") from None
    key = context.export(_EXPORTER_CONTEXT, SECRET_SIZE)
    signature = sign_exchange(mesh_key, public_key, enc)
    body = orjson.dumps(
        {
            "EncapsulatedKey": _b64(enc),
            "Signature": _b64(signature),
            "MeshCert": _b64(bytes(mesh_cert_der)),
        }
    )
    return body, Secret(id=secret_id_for(public_key), key=key)
