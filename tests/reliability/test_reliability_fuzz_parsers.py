"""Property tests on every parser an attacker can feed: any input gives a result or the parser's
own clear error, never another exception, and a mutated genuine input never yields a different
result than the genuine one (it is refused, or the change was in a part that carries no meaning).

Complements tests/attestation/test_malformed_input.py and tests/protocol (random bytes and single
byte flips): here the inputs are structured (well-formed protobuf of random fields, field-cipher
strings built from valid and invalid parts, multi-byte mutations of genuine documents,
certificates, exchange answers and encrypted bodies).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from privatemode_proxy._service import parse_embeddings_request
from privatemode_proxy.attestation import (
    AttestationError,
    AttestationResponse,
    SnpAttestation,
    load_trusted_root,
    verify_attestation,
)
from privatemode_proxy.attestation._errors import (
    EvidenceError,
)
from privatemode_proxy.attestation._roots import (
    parse_trusted_root,
)
from privatemode_proxy.attestation._x509 import (
    load_certificate,
    pem_encode,
)
from privatemode_proxy.local import LocalBackend
from privatemode_proxy.openai import ApiError, VectorFormatError, decode_embeddings
from privatemode_proxy.protocol import (
    ClientSecretExchange,
    FieldCipherError,
    RequestCipher,
    ResponseCipher,
    SecretExchangeError,
    serve_secret_exchange,
    verify_exchange,
)

SCALE = 10 if os.environ.get("RELIABILITY_SLOW") == "1" else 1
SETTINGS = settings(
    max_examples=200 * SCALE,
    deadline=None,
    derandomize=True,  # the same examples on every CI run: a failure is never a fluke
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SLOWER = settings(SETTINGS, max_examples=80 * SCALE)

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=15,
)


def _dumps(value: Any) -> bytes:
    """JSON text of any generated value (the json module writes integers of any size)."""
    return json.dumps(value).encode()


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """`data` with 1-4 edits: byte replaced, bytes deleted, bytes inserted."""
    # Positions are drawn independently of len(data) and reduced modulo the length: some inputs
    # (a fresh secret-exchange answer: its DER signature varies in length) differ from one
    # example to the next, and Hypothesis needs the same draws for a replayed example.
    edit = st.tuples(
        st.sampled_from(["set", "delete", "insert"]),
        st.integers(min_value=0, max_value=1 << 20),
        st.binary(min_size=1, max_size=4),
    )

    def apply(edits: list[tuple[str, int, bytes]]) -> bytes:
        out = bytearray(data)
        for kind, drawn, payload in edits:
            position = drawn % max(len(out), 1)
            if kind == "set" and out:
                out[position] = payload[0] if payload[0] != out[position] else payload[0] ^ 0xFF
            elif kind == "delete":
                del out[position : position + len(payload)]
            else:
                out[position:position] = payload
        return bytes(out)

    return st.lists(edit, min_size=1, max_size=4).map(apply).filter(lambda m: m != data)


# =============================================================================================
# Field cipher strings and bodies
# =============================================================================================

SECRET = os.urandom(32)
SECRET_ID = base64.b64encode(os.urandom(32)).decode()


def _hex(size: int) -> st.SearchStrategy[str]:
    return st.binary(min_size=size, max_size=size).map(bytes.hex)


token_parts = st.tuples(
    st.sampled_from([SECRET_ID, "", "x", "ab:cd"]) | st.text(max_size=20),
    _hex(12) | _hex(11) | st.text(max_size=30) | st.just("zz" * 12),
    _hex(12) | _hex(13) | st.text(max_size=30),
    _hex(40) | _hex(15) | st.just("") | st.text(max_size=60) | _hex(16).map(str.upper),
)
tokens = token_parts.map(":".join) | st.text(max_size=80)
cipher_bodies = st.dictionaries(
    st.sampled_from(["data", "model", "object", "created", "input", "id", "usage", "x.y", "é"]),
    tokens | json_values,
    max_size=5,
).map(_dumps) | st.binary(max_size=300)


def _lookup(secret_id: str) -> bytes | None:
    return SECRET if secret_id == SECRET_ID else None


@SETTINGS
@given(body=cipher_bodies)
def test_field_cipher_parsers_raise_only_field_cipher_errors(body: bytes) -> None:
    try:
        RequestCipher(SECRET, SECRET_ID).decrypt_response(body)
    except FieldCipherError:
        pass
    try:
        ResponseCipher(_lookup).decrypt_request(body)
    except FieldCipherError:
        pass


def _exchange_pair() -> tuple[RequestCipher, ResponseCipher, bytes, bytes, dict[str, Any]]:
    request_plain = orjson.dumps(
        {"model": "m", "input": ["alpha", "beta"], "encoding_format": "base64", "user": "u"}
    )
    client = RequestCipher(SECRET, SECRET_ID)
    sealed_request = client.encrypt_request(request_plain)
    server = ResponseCipher(_lookup)
    server.decrypt_request(sealed_request)
    response_plain = {
        "id": "embd-1",
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": "AAAA"}],
        "model": "m",
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }
    sealed_response = server.encrypt_response(orjson.dumps(response_plain))
    return client, server, sealed_request, sealed_response, response_plain


_, _, SEALED_REQUEST, SEALED_RESPONSE, RESPONSE_PLAIN = _exchange_pair()
REQUEST_PLAIN = {"input": ["alpha", "beta"], "encoding_format": "base64", "user": "u"}


def _encrypted_values(obj: dict[str, Any], plain: frozenset[str]) -> list[Any]:
    """The values of the encrypted fields in processing (sorted key) order.

    The protocol authenticates each value with its position (nonce || sequence number), not with
    its key: a key renamed without changing the order still decrypts (to the same value under
    another name). What must never happen is a different value, or values in another order.
    """
    return [obj[k] for k in sorted(k for k in obj if k not in plain)]


@SETTINGS
@given(mutated=_mutations(SEALED_RESPONSE))
def test_a_mutated_encrypted_response_never_decrypts_to_other_content(mutated: bytes) -> None:
    client, server, _, _, plain = _exchange_pair()
    sealed = server.encrypt_response(orjson.dumps(plain))  # a fresh response for this client
    edited = _same_edits(SEALED_RESPONSE, mutated, sealed)  # the same edit, on this response
    try:
        opened = orjson.loads(client.decrypt_response(edited))
    except FieldCipherError:
        return
    want = _encrypted_values(plain, frozenset({"id", "usage"}))
    assert _encrypted_values(opened, frozenset({"id", "usage"})) == want


def _same_edits(original: bytes, mutated: bytes, target: bytes) -> bytes:
    """Transplant the difference between `original` and `mutated` onto `target` (same layout):
    the common prefix and suffix stay, the middle is what the mutation put there."""
    prefix = 0
    while prefix < min(len(original), len(mutated)) and original[prefix] == mutated[prefix]:
        prefix += 1
    suffix = 0
    while (
        suffix < min(len(original), len(mutated)) - prefix
        and original[-1 - suffix] == mutated[-1 - suffix]
    ):
        suffix += 1
    middle = mutated[prefix : len(mutated) - suffix]
    return target[:prefix] + middle + target[len(target) - suffix :]


@SETTINGS
@given(mutated=_mutations(SEALED_REQUEST))
def test_a_mutated_encrypted_request_never_decrypts_to_other_content(mutated: bytes) -> None:
    server = ResponseCipher(_lookup)
    try:
        opened = orjson.loads(server.decrypt_request(mutated))
    except FieldCipherError:
        return
    model = frozenset({"model"})
    assert _encrypted_values(opened, model) == _encrypted_values(REQUEST_PLAIN, model)


# =============================================================================================
# The proxy's own request parser and the upstream vector decoder
# =============================================================================================


@settings(SETTINGS, max_examples=500 * SCALE)
@given(body=json_values.map(_dumps) | st.binary(max_size=200))
def test_proxy_request_parser_raises_only_400s(body: bytes) -> None:
    try:
        request = parse_embeddings_request(body)
    except ApiError as exc:
        assert exc.status_code == 400
        assert exc.message
        return
    assert request.texts and all(isinstance(t, str) for t in request.texts)


embedding_items = st.fixed_dictionaries(
    {},
    optional={
        "index": st.integers(min_value=-2, max_value=5) | json_leaves,
        "embedding": st.lists(json_leaves, max_size=4)
        | st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=4)
        | st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode())
        | st.text(max_size=12),
        "object": st.just("embedding"),
    },
)


@settings(SETTINGS, max_examples=400 * SCALE)
@given(
    data=st.lists(embedding_items | json_values, max_size=5) | json_values, count=st.integers(0, 5)
)
def test_upstream_vector_decoder_raises_only_vector_format_errors(data: Any, count: int) -> None:
    try:
        matrix = decode_embeddings(data, count)
    except VectorFormatError:
        return
    assert matrix.shape[0] == count


# =============================================================================================
# Protobuf, attestation documents, certificates
# =============================================================================================


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire: int, payload: Any) -> bytes:
    key = _varint((number << 3) | wire)
    if wire == 0:
        return key + _varint(payload)
    if wire == 1:
        return key + payload.to_bytes(8, "little")
    if wire == 5:
        return key + payload.to_bytes(4, "little")
    return key + _varint(len(payload)) + payload


protobuf_fields = st.recursive(
    st.tuples(st.integers(1, 32), st.just(0), st.integers(0, 2**64 - 1))
    | st.tuples(st.integers(1, 32), st.just(1), st.integers(0, 2**64 - 1))
    | st.tuples(st.integers(1, 32), st.just(5), st.integers(0, 2**32 - 1))
    | st.tuples(st.integers(1, 32), st.just(2), st.binary(max_size=80)),
    lambda inner: st.tuples(
        st.integers(1, 8),
        st.just(2),
        st.lists(inner, max_size=6).map(lambda fs: b"".join(_field(*f) for f in fs)),
    ),
    max_leaves=20,
)
protobuf_messages = st.lists(protobuf_fields, max_size=8).map(
    lambda fs: b"".join(_field(*f) for f in fs)
)


@SETTINGS
@given(message=protobuf_messages)
def test_well_formed_protobuf_of_random_fields(message: bytes) -> None:
    try:
        SnpAttestation.from_proto(message)
    except EvidenceError:
        pass


class _Short(dict):  # type: ignore[type-arg]
    """A dict with a short repr: hypothesis prints fixture values with a failing example."""

    def __repr__(self) -> str:
        return f"<{', '.join(sorted(self))}>"


@pytest.fixture(scope="module")
def genuine(rel_backend: LocalBackend) -> dict[str, Any]:
    identity = rel_backend.identity
    nonce = bytes(range(32))
    document = identity.attestation_doc(nonce)
    roots = [identity.trusted_root()]
    result = verify_attestation(
        nonce, document, expected_manifest=identity.manifest_bytes, trusted_roots=roots
    )
    return _Short(
        {
            "identity": identity,
            "nonce": nonce,
            "document": document,
            "roots": roots,
            "result": result,
            "proto": AttestationResponse.from_json(document).raw_attestation_doc,
        }
    )


def _verify(genuine: dict[str, Any], document: bytes) -> None:
    """Verify; on success the result must be the genuine one (the mutation changed nothing)."""
    try:
        result = verify_attestation(
            genuine["nonce"],
            document,
            expected_manifest=genuine["identity"].manifest_bytes,
            trusted_roots=genuine["roots"],
        )
    except AttestationError as exc:
        assert str(exc)
        return
    want = genuine["result"]
    assert result.measurement == want.measurement
    assert result.mesh_ca == want.mesh_ca
    assert result.manifest_sha256 == want.manifest_sha256


@SLOWER
@given(data=st.data())
def test_mutated_evidence_protobuf_is_refused_or_equivalent(
    genuine: dict[str, Any], data: st.DataObject
) -> None:
    proto = data.draw(_mutations(genuine["proto"]))
    response = AttestationResponse.from_json(genuine["document"])
    from dataclasses import replace

    _verify(genuine, replace(response, raw_attestation_doc=proto).to_json())


@SLOWER
@given(data=st.data())
def test_attestation_document_fields_replaced_by_any_json(
    genuine: dict[str, Any], data: st.DataObject
) -> None:
    obj = json.loads(genuine["document"])
    key = data.draw(st.sampled_from(sorted(obj)))
    value = data.draw(
        json_values
        | st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
        | st.just(obj[key]).map(lambda v: v[:-4] if isinstance(v, str) else v)
    )
    obj[key] = value
    _verify(genuine, json.dumps(obj).encode())


@SLOWER
@given(data=st.data())
def test_mutated_attestation_document_bytes(genuine: dict[str, Any], data: st.DataObject) -> None:
    _verify(genuine, data.draw(_mutations(genuine["document"])))


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def certificates(genuine: dict[str, Any]) -> dict[str, bytes]:
    identity = genuine["identity"]
    root = identity.trusted_root()
    return _Short(
        {
            "vcek": identity.vcek_der,
            "ask": root.ask_der,
            "ark": root.ark_der,
            "mesh": identity.mesh_cert_der,
            "mesh_ca": _der(identity.mesh_ca),
        }
    )


@SETTINGS
@given(data=st.data())
def test_mutated_certificates_load_or_raise_evidence_errors(
    certificates: dict[str, bytes], data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(certificates)))
    mutated = data.draw(_mutations(certificates[name]))
    try:
        cert = load_certificate(mutated)
    except EvidenceError:
        return
    assert isinstance(cert, x509.Certificate)


@SETTINGS
@given(data=st.data())
def test_mutated_trusted_root_pem(genuine: dict[str, Any], data: st.DataObject) -> None:
    pem = genuine["identity"].trusted_root().to_pem()
    try:
        parse_trusted_root(data.draw(_mutations(pem)))
    except EvidenceError:
        pass


# =============================================================================================
# The secret exchange answer
# =============================================================================================


@SLOWER
@given(data=st.data())
def test_mutated_exchange_answer_is_refused_or_gives_the_same_secret(
    genuine: dict[str, Any], data: st.DataObject
) -> None:
    identity = genuine["identity"]
    exchange = ClientSecretExchange()
    body, secret = serve_secret_exchange(
        exchange.request_body(), identity.mesh_key, identity.mesh_cert_der
    )
    mutated = data.draw(_mutations(body))
    try:
        got = exchange.complete(mutated, identity.mesh_ca)
    except SecretExchangeError:
        return
    assert got == secret  # e.g. a key's case changed (Go matches field names case-insensitively)


@SETTINGS
@given(data=st.data())
def test_verify_exchange_with_a_mutated_mesh_certificate(
    genuine: dict[str, Any], certificates: dict[str, bytes], data: st.DataObject
) -> None:
    identity = genuine["identity"]
    mutated = data.draw(_mutations(certificates["mesh"]))
    public_key, enc = os.urandom(1216), os.urandom(1120)
    from privatemode_proxy.protocol._secretexchange import sign_exchange

    signature = sign_exchange(identity.mesh_key, public_key, enc)
    check: Callable[[], None] = lambda: verify_exchange(  # noqa: E731
        identity.mesh_ca, mutated, public_key, enc, signature
    )
    try:
        check()
    except SecretExchangeError:
        pass


def test_mesh_certificate_with_a_malformed_issuer_is_a_secret_exchange_error(
    genuine: dict[str, Any],
) -> None:
    """verify_exchange promises SecretExchangeError on any failure; a MeshCert whose issuer
    name does not parse escapes as a bare ValueError (found by the property test above)."""
    identity = genuine["identity"]
    der = identity.mesh_cert_der
    issuer = identity.mesh_ca.subject.public_bytes()
    at = der.index(issuer) + 11  # the string tag of the issuer's first attribute value
    assert der[at] == 0x0C
    mangled = der[:at] + b"\x00" + der[at + 1 :]
    public_key, enc = os.urandom(1216), os.urandom(1120)
    from privatemode_proxy.protocol._secretexchange import sign_exchange

    signature = sign_exchange(identity.mesh_key, public_key, enc)
    with pytest.raises(SecretExchangeError):
        verify_exchange(identity.mesh_ca, mangled, public_key, enc, signature)


def test_corrupted_trusted_root_file_is_an_attestation_error(
    genuine: dict[str, Any], tmp_path: Path
) -> None:
    """load_trusted_root promises AttestationError for a root that is not well formed; a root
    whose ARK subject does not parse escapes as a bare ValueError (found by the property test
    above: cryptography parses names lazily, after load_certificate returned)."""
    root = genuine["identity"].trusted_root()
    ark = bytearray(root.ark_der)
    subject = root.ark.subject.public_bytes()
    at = bytes(ark).index(subject, 100) + 11  # the string tag of the subject's first value
    assert ark[at] == 0x0C
    ark[at] = 0x00
    path = tmp_path / "root.pem"
    path.write_bytes(
        pem_encode("CERTIFICATE", root.ask_der) + pem_encode("CERTIFICATE", bytes(ark))
    )
    with pytest.raises(AttestationError, match="TRUSTED_ROOT"):
        load_trusted_root(path)
