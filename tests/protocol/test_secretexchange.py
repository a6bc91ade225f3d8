"""The secret exchange (protocol §2) with a real mesh CA, mesh certificate and X-Wing keys."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from privatemode_proxy.protocol import (
    XWING_ENC_SIZE,
    XWING_PUBLIC_KEY_SIZE,
    ClientSecretExchange,
    RequestCipher,
    ResponseCipher,
    Secret,
    SecretExchangeError,
    XWingPrivateKey,
    exchange_digest,
    secret_id_for,
    serve_secret_exchange,
    setup_base_receiver_export,
    sign_exchange,
    verify_exchange,
)

NOW = datetime.now(UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(
    common_name: str = "Contrast Mesh CA", *, not_after: datetime | None = None
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(not_after or NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def make_mesh_cert(
    ca_key: Any,
    ca_cert: x509.Certificate,
    *,
    key: Any = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    usages: list[x509.ObjectIdentifier] | None = None,
) -> tuple[Any, bytes]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("secret-service"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - timedelta(hours=1))
        .not_valid_after(not_after or NOW + timedelta(days=30))
        .add_extension(
            x509.ExtendedKeyUsage(
                usages or [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    cert = builder.sign(ca_key, hashes.SHA384())
    return key, cert.public_bytes(Encoding.DER)


@pytest.fixture(scope="module")
def mesh() -> tuple[Any, x509.Certificate, Any, bytes]:
    ca_key, ca_cert = make_ca()
    mesh_key, mesh_der = make_mesh_cert(ca_key, ca_cert)
    return ca_key, ca_cert, mesh_key, mesh_der


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --------------------------------------------------------------------------- pieces


def test_secret_id_is_padded_standard_base64_of_sha256() -> None:
    assert secret_id_for(b"") == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    pk = XWingPrivateKey.from_seed(bytes(32)).public_key_bytes()
    assert secret_id_for(pk) == base64.b64encode(hashlib.sha256(pk).digest()).decode()


def test_exchange_digest() -> None:
    assert exchange_digest(b"ab", b"cd") == hashlib.sha256(b"abcd").digest()
    assert exchange_digest(b"a", b"bcd") == exchange_digest(b"ab", b"cd")  # plain concatenation


def test_signature_is_prehashed_der_ecdsa(mesh: Any) -> None:
    _, _, mesh_key, _ = mesh
    pk, enc = b"P" * XWING_PUBLIC_KEY_SIZE, b"E" * XWING_ENC_SIZE
    signature = sign_exchange(mesh_key, pk, enc)
    decode_dss_signature(signature)  # DER (r, s)
    public = mesh_key.public_key()
    digest = hashlib.sha256(pk + enc).digest()
    public.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    # Equivalent: ECDSA-SHA256 over the concatenation (the digest is signed once, not re-hashed).
    public.verify(signature, pk + enc, ec.ECDSA(hashes.SHA256()))


def test_secret_repr_hides_the_key() -> None:
    key = bytes(range(32))
    secret = Secret(id="abc", key=key)
    for text in (repr(secret), str(secret), f"{secret}"):
        assert key.hex() not in text and repr(key) not in text and "abc" in text


@pytest.mark.parametrize(("secret_id", "key"), [("", bytes(32)), ("id", bytes(31)), ("id", "k")])
def test_secret_validation(secret_id: str, key: Any) -> None:
    with pytest.raises(ValueError, match="Secret"):
        Secret(id=secret_id, key=key)


# --------------------------------------------------------------------------- full exchange


def test_full_exchange(mesh: Any) -> None:
    _, ca_cert, mesh_key, mesh_der = mesh
    client = ClientSecretExchange()
    request = orjson.loads(client.request_body())
    assert list(request) == ["PublicKey"]
    public_key = base64.b64decode(request["PublicKey"], validate=True)
    assert len(public_key) == XWING_PUBLIC_KEY_SIZE
    assert public_key == client.public_key

    response_body, server_secret = serve_secret_exchange(client.request_body(), mesh_key, mesh_der)
    response = orjson.loads(response_body)
    assert list(response) == ["EncapsulatedKey", "Signature", "MeshCert"]
    enc = base64.b64decode(response["EncapsulatedKey"], validate=True)
    assert len(enc) == XWING_ENC_SIZE
    assert base64.b64decode(response["MeshCert"]) == mesh_der
    verify_exchange(ca_cert, mesh_der, public_key, enc, base64.b64decode(response["Signature"]))

    client_secret = client.complete(response_body, ca_cert)
    assert client_secret == server_secret
    assert client_secret.id == secret_id_for(public_key) == client.secret_id
    assert len(client_secret.key) == 32


def test_exported_secret_is_hpke_export_with_empty_context(mesh: Any) -> None:
    _, ca_cert, mesh_key, mesh_der = mesh
    private = XWingPrivateKey.generate()
    client = ClientSecretExchange(private)
    response_body, secret = serve_secret_exchange(client.request_body(), mesh_key, mesh_der)
    enc = base64.b64decode(orjson.loads(response_body)["EncapsulatedKey"])
    assert setup_base_receiver_export(private, enc, b"").export(b"", 32) == secret.key
    assert client.complete(response_body, ca_cert) == secret


def test_exchanged_secret_drives_the_field_cipher(mesh: Any) -> None:
    _, ca_cert, mesh_key, mesh_der = mesh
    client = ClientSecretExchange()
    response_body, server_secret = serve_secret_exchange(client.request_body(), mesh_key, mesh_der)
    secret = client.complete(response_body, ca_cert)
    store = {server_secret.id: server_secret.key}
    request = RequestCipher(secret.key, secret.id)
    wire = request.encrypt_request(b'{"model":"m","input":["hello"]}')
    server = ResponseCipher(store.get)
    assert orjson.loads(server.decrypt_request(wire)) == {"model": "m", "input": ["hello"]}


def test_every_exchange_has_a_new_key_pair_and_secret(mesh: Any) -> None:
    _, ca_cert, mesh_key, mesh_der = mesh
    secrets = set()
    for _ in range(3):
        client = ClientSecretExchange()
        body, _ = serve_secret_exchange(client.request_body(), mesh_key, mesh_der)
        secret = client.complete(body, ca_cert)
        secrets.add((secret.id, secret.key))
    assert len(secrets) == 3


def test_go_style_case_insensitive_field_names(mesh: Any) -> None:
    """Go's encoding/json matches field names case-insensitively."""
    _, ca_cert, mesh_key, mesh_der = mesh
    client = ClientSecretExchange()
    body, secret = serve_secret_exchange(
        b'{"publickey": "%s"}' % b64(client.public_key).encode(), mesh_key, mesh_der
    )
    lowered = {k.lower(): v for k, v in orjson.loads(body).items()}
    assert client.complete(orjson.dumps(lowered), ca_cert) == secret


# --------------------------------------------------------------------------- refusals


def _exchange(mesh_key: Any, mesh_der: bytes) -> tuple[ClientSecretExchange, dict[str, str]]:
    client = ClientSecretExchange()
    body, _ = serve_secret_exchange(client.request_body(), mesh_key, mesh_der)
    return client, orjson.loads(body)


def _assert_refused(
    client: ClientSecretExchange,
    response: dict[str, str],
    ca: x509.Certificate,
    match: str,
    now: datetime | None = None,
) -> None:
    with pytest.raises(SecretExchangeError, match=match) as info:
        client.complete(orjson.dumps(response), ca, now=now)
    assert info.value.__cause__ is None


def test_certificate_from_another_ca_is_refused(mesh: Any) -> None:
    _, ca_cert, _, _ = mesh
    other_key, other_ca = make_ca("Other CA")
    mesh_key, mesh_der = make_mesh_cert(other_key, other_ca)
    client, response = _exchange(mesh_key, mesh_der)
    _assert_refused(client, response, ca_cert, "not issued by the attested mesh CA")


def test_certificate_signed_by_an_impostor_with_the_same_name_is_refused(mesh: Any) -> None:
    _, ca_cert, _, _ = mesh
    impostor_key, impostor_ca = make_ca("Contrast Mesh CA")  # same subject, other key
    mesh_key, mesh_der = make_mesh_cert(impostor_key, impostor_ca)
    client, response = _exchange(mesh_key, mesh_der)
    _assert_refused(client, response, ca_cert, "not issued by the attested mesh CA")


def test_expired_and_not_yet_valid_certificates_are_refused(mesh: Any) -> None:
    ca_key, ca_cert, _, _ = mesh
    mesh_key, mesh_der = make_mesh_cert(ca_key, ca_cert, not_after=NOW - timedelta(minutes=1))
    client, response = _exchange(mesh_key, mesh_der)
    _assert_refused(client, response, ca_cert, "MeshCert is not valid at")
    mesh_key, mesh_der = make_mesh_cert(ca_key, ca_cert, not_before=NOW + timedelta(hours=1))
    client, response = _exchange(mesh_key, mesh_der)
    _assert_refused(client, response, ca_cert, "MeshCert is not valid at")
    # The same certificate is fine at a time inside its validity.
    assert client.complete(orjson.dumps(response), ca_cert, now=NOW + timedelta(hours=2))


def test_expired_mesh_ca_is_refused() -> None:
    ca_key, ca_cert = make_ca(not_after=NOW + timedelta(days=2))
    mesh_key, mesh_der = make_mesh_cert(ca_key, ca_cert)
    client, response = _exchange(mesh_key, mesh_der)
    _assert_refused(
        client,
        response,
        ca_cert,
        "mesh CA certificate is not valid at",
        now=NOW + timedelta(days=3),
    )


def test_non_ecdsa_certificate_key_is_refused(mesh: Any) -> None:
    ca_key, ca_cert, _, _ = mesh
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _, mesh_der = make_mesh_cert(ca_key, ca_cert, key=rsa_key)
    client = ClientSecretExchange()
    # The server side can't sign with RSA; craft the response by hand with some signature.
    ec_key = ec.generate_private_key(ec.SECP256R1())
    body, _ = serve_secret_exchange(client.request_body(), ec_key, mesh_der)
    _assert_refused(client, orjson.loads(body), ca_cert, "not ECDSA")


def test_certificate_without_server_auth_usage_is_refused(mesh: Any) -> None:
    ca_key, ca_cert, _, _ = mesh
    mesh_key, mesh_der = make_mesh_cert(ca_key, ca_cert, usages=[ExtendedKeyUsageOID.CLIENT_AUTH])
    client, response = _exchange(mesh_key, mesh_der)
    _assert_refused(client, response, ca_cert, "not valid for server authentication")


def test_tampered_signature_is_refused(mesh: Any) -> None:
    _, ca_cert, mesh_key, mesh_der = mesh
    client, response = _exchange(mesh_key, mesh_der)
    signature = bytearray(base64.b64decode(response["Signature"]))
    signature[-1] ^= 0x01
    response["Signature"] = b64(bytes(signature))
    _assert_refused(client, response, ca_cert, "does not verify")


def test_signature_by_another_key_is_refused(mesh: Any) -> None:
    _, ca_cert, _, mesh_der = mesh
    client, response = _exchange(ec.generate_private_key(ec.SECP256R1()), mesh_der)
    _assert_refused(client, response, ca_cert, "does not verify")


def test_replaced_encapsulated_key_is_refused(mesh: Any) -> None:
    """A man in the middle swapping EncapsulatedKey breaks the signature."""
    _, ca_cert, mesh_key, mesh_der = mesh
    client, response = _exchange(mesh_key, mesh_der)
    _, other_response = _exchange(mesh_key, mesh_der)
    response["EncapsulatedKey"] = other_response["EncapsulatedKey"]
    _assert_refused(client, response, ca_cert, "does not verify")


def test_answer_for_another_public_key_is_refused(mesh: Any) -> None:
    _, ca_cert, mesh_key, mesh_der = mesh
    _, response = _exchange(mesh_key, mesh_der)
    _assert_refused(ClientSecretExchange(), response, ca_cert, "does not verify")


def test_signed_but_malformed_encapsulated_key_is_refused(mesh: Any) -> None:
    _, ca_cert, mesh_key, mesh_der = mesh
    client = ClientSecretExchange()
    enc = b"\x00" * 10
    response = {
        "EncapsulatedKey": b64(enc),
        "Signature": b64(sign_exchange(mesh_key, client.public_key, enc)),
        "MeshCert": b64(mesh_der),
    }
    _assert_refused(client, response, ca_cert, "EncapsulatedKey rejected: .*1120 bytes")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"{}", "lacks the base64 string field 'EncapsulatedKey'"),
        (b'{"EncapsulatedKey": "!!", "Signature": "", "MeshCert": ""}', "not standard base64"),
        (b'{"EncapsulatedKey": "AAA", "Signature": "", "MeshCert": ""}', "not standard base64"),
        (b'{"EncapsulatedKey": "", "Signature": "", "MeshCert": "AAAA"}', "not a DER X.509"),
        (b'{"EncapsulatedKey": null, "Signature": "", "MeshCert": ""}', "lacks"),
    ],
)
def test_malformed_responses(mesh: Any, body: bytes, match: str) -> None:
    _, ca_cert, _, _ = mesh
    with pytest.raises(SecretExchangeError, match=match):
        ClientSecretExchange().complete(body, ca_cert)


def test_mesh_ca_must_be_a_certificate(mesh: Any) -> None:
    _, ca_cert, mesh_key, mesh_der = mesh
    client, response = _exchange(mesh_key, mesh_der)
    with pytest.raises(SecretExchangeError, match=r"x509\.Certificate"):
        client.complete(orjson.dumps(response), ca_cert.public_bytes(Encoding.PEM))


def test_verify_exchange_needs_an_aware_time(mesh: Any) -> None:
    _, ca_cert, _, mesh_der = mesh
    with pytest.raises(SecretExchangeError, match="timezone-aware"):
        verify_exchange(ca_cert, mesh_der, b"", b"", b"", now=datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"{}", "lacks the base64 string field 'PublicKey'"),
        (b'{"PublicKey": "AAAA"}', "PublicKey rejected: .*1216 bytes, got 3"),
        (b'{"PublicKey": "not base64!"}', "not standard base64"),
        (b"nope", "not valid JSON"),
    ],
)
def test_server_refuses_bad_requests(mesh: Any, body: bytes, match: str) -> None:
    _, _, mesh_key, mesh_der = mesh
    with pytest.raises(SecretExchangeError, match=match):
        serve_secret_exchange(body, mesh_key, mesh_der)


def test_server_refuses_an_invalid_mlkem_key(mesh: Any) -> None:
    _, _, mesh_key, mesh_der = mesh
    pk = bytearray(XWingPrivateKey.generate().public_key_bytes())
    pk[0:2] = b"\xff\xff"
    with pytest.raises(SecretExchangeError, match="PublicKey rejected: invalid ML-KEM-768"):
        serve_secret_exchange(orjson.dumps({"PublicKey": b64(bytes(pk))}), mesh_key, mesh_der)


def test_sign_exchange_needs_an_ec_key() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(TypeError, match="ECDSA"):
        sign_exchange(rsa_key, b"pk", b"enc")  # type: ignore[arg-type]
