"""Field encryption (protocol §3): wire format, order, round trips, tampering and state rules."""

from __future__ import annotations

import os
import random
import re
import struct
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from privatemode_proxy.protocol import (
    EMBEDDINGS_REQUEST_PLAIN_FIELDS,
    EMBEDDINGS_RESPONSE_PLAIN_FIELDS,
    FieldCipherError,
    RequestCipher,
    ResponseCipher,
    UnknownSecretError,
    _fieldcipher,
    secret_id_for,
)

SECRET = bytes(range(32))
SECRET_ID = secret_id_for(b"test public key")
MARKER = "PLAINTEXT-MARKER-7f3a"  # must never show up in an error message

TOKEN = re.compile(
    r"^(?P<id>[^:]+):(?P<nonce>[0-9a-f]{24}):(?P<iv>[0-9a-f]{24}):(?P<ct>[0-9a-f]+)$"
)


def lookup(secret_id: str) -> bytes | None:
    return SECRET if secret_id == SECRET_ID else None


def request_body() -> dict[str, Any]:
    return {
        "model": "all-minilm-l6-v2",
        "input": [f"{MARKER} first text", "second text"],
        "encoding_format": "float",
        "dimensions": 384,
        "user": f"{MARKER}-user",
    }


def response_body() -> dict[str, Any]:
    return {
        "id": "embd-123",
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.25, -1.5e-3, 3.0]},
            {"object": "embedding", "index": 1, "embedding": [1.0, 2.0, 3.0]},
        ],
        "model": f"{MARKER}-model",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
        "created": 1700000000,
    }


def parse_token(value: str) -> dict[str, str]:
    match = TOKEN.match(value)
    assert match, "not an id:nonce:iv:ct token"
    return match.groupdict()


def manual_open(token: str, nonce: bytes, sequence: int, key: bytes = SECRET) -> bytes:
    """Decrypt one field by the spec, without the module under test."""
    parts = parse_token(token)
    aad = nonce + struct.pack("<I", sequence)
    return AESGCM(key).decrypt(bytes.fromhex(parts["iv"]), bytes.fromhex(parts["ct"]), aad)


def manual_seal(
    plaintext: bytes,
    nonce: bytes,
    sequence: int,
    *,
    key: bytes = SECRET,
    secret_id: str = SECRET_ID,
) -> str:
    """Encrypt one field by the spec, as the official Go code does."""
    iv = os.urandom(12)
    ct = AESGCM(key).encrypt(iv, plaintext, nonce + struct.pack("<I", sequence))
    return f"{secret_id}:{nonce.hex()}:{iv.hex()}:{ct.hex()}"


def exchange(body: dict[str, Any]) -> tuple[RequestCipher, ResponseCipher, dict[str, Any]]:
    client = RequestCipher(SECRET, SECRET_ID)
    wire = orjson.loads(client.encrypt_request(orjson.dumps(body)))
    server = ResponseCipher(lookup)
    assert orjson.loads(server.decrypt_request(orjson.dumps(wire))) == body
    return client, server, wire


def assert_clean(exc: BaseException) -> None:
    text = str(exc) + repr(exc)
    assert MARKER not in text
    assert SECRET.hex() not in text and repr(SECRET) not in text
    assert exc.__cause__ is None


# --------------------------------------------------------------------------- wire format


def test_request_wire_format() -> None:
    body = request_body()
    client = RequestCipher(SECRET, SECRET_ID)
    wire = orjson.loads(client.encrypt_request(orjson.dumps(body)))
    assert list(wire) == list(body)  # key order kept
    assert wire["model"] == body["model"]  # the plain field
    tokens = {k: parse_token(v) for k, v in wire.items() if k != "model"}
    assert set(tokens) == {"input", "encoding_format", "dimensions", "user"}
    assert {t["id"] for t in tokens.values()} == {SECRET_ID}
    assert len({t["nonce"] for t in tokens.values()}) == 1  # one request nonce
    assert len({t["iv"] for t in tokens.values()}) == 4  # a fresh IV per field
    nonce = bytes.fromhex(next(iter(tokens.values()))["nonce"])
    # Sequence numbers follow the sorted keys; the plaintext is the compact raw JSON value.
    for sequence, key in enumerate(sorted(tokens)):
        assert manual_open(wire[key], nonce, sequence) == orjson.dumps(body[key])
    assert MARKER not in orjson.dumps(wire).decode()


def test_response_wire_format_uses_the_request_nonce() -> None:
    client, server, wire = exchange(request_body())
    request_nonce = bytes.fromhex(parse_token(wire["input"])["nonce"])
    body = response_body()
    encrypted = orjson.loads(server.encrypt_response(orjson.dumps(body)))
    assert encrypted["id"] == body["id"] and encrypted["usage"] == body["usage"]
    keys = sorted(k for k in body if k not in EMBEDDINGS_RESPONSE_PLAIN_FIELDS)
    assert keys == ["created", "data", "model", "object"]
    for sequence, key in enumerate(keys):  # the server counts from 0 again
        assert parse_token(encrypted[key])["nonce"] == request_nonce.hex()
        assert manual_open(encrypted[key], request_nonce, sequence) == orjson.dumps(body[key])
    assert orjson.loads(client.decrypt_response(orjson.dumps(encrypted))) == body


def test_decrypted_values_are_json_not_strings() -> None:
    client, server, _ = exchange(request_body())
    plain = orjson.loads(
        client.decrypt_response(
            server.encrypt_response(
                orjson.dumps({"data": [1, 2], "object": "list", "created": 5, "flag": None})
            )
        )
    )
    assert plain == {"data": [1, 2], "object": "list", "created": 5, "flag": None}


def test_server_decrypts_what_the_go_client_would_send() -> None:
    """A request built by hand by the spec (the official client's output) is accepted."""
    nonce = os.urandom(12)
    wire = {
        "model": "m",
        "input": manual_seal(b'["a", "b"]', nonce, 1),  # raw JSON text, spacing kept
        "dimensions": manual_seal(b"64", nonce, 0),
        "user": manual_seal(b'"u"', nonce, 2),
    }
    server = ResponseCipher(lookup)
    out = server.decrypt_request(orjson.dumps(wire))
    assert out == b'{"model":"m","input":["a", "b"],"dimensions":64,"user":"u"}'
    assert server.secret_id == SECRET_ID


def test_client_decrypts_what_the_go_server_would_send() -> None:
    client = RequestCipher(SECRET, SECRET_ID)
    wire = orjson.loads(client.encrypt_request(b'{"model":"m","input":"x"}'))
    nonce = bytes.fromhex(parse_token(wire["input"])["nonce"])
    response = {
        "id": "r",
        "data": manual_seal(b'[{"embedding":[0.5]}]', nonce, 0),
        "object": manual_seal(b'"list"', nonce, 1),
    }
    out = orjson.loads(client.decrypt_response(orjson.dumps(response)))
    assert out == {"id": "r", "data": [{"embedding": [0.5]}], "object": "list"}


def test_field_order_is_the_official_gjson_escaped_byte_order() -> None:
    """Keys are sorted as gjson-escaped UTF-8 bytes ('.', '?', '*' get a backslash).

    Plain byte order would be "a.b" < "a0" < "a_"; escaped it is "a0" < "a\\.b" < "a_". For
    non-ASCII keys UTF-8 byte order is used (U+FF5E before U+1F600; UTF-16 order would differ).
    """
    body = {"a_": 1, "a.b": 2, "a0": 3, "\U0001f600": 4, "\uff5e": 5, "Z": 6, "a?": 7}
    client = RequestCipher(SECRET, SECRET_ID)
    wire = orjson.loads(client.encrypt_request(orjson.dumps(body), plain_fields=()))
    nonce = bytes.fromhex(parse_token(wire["a_"])["nonce"])
    # "a.b" and "a?" escape to "a\\.b" and "a\\?"; after the backslash '.' (0x2e) < '?' (0x3f).
    expected_order = ["Z", "a0", "a.b", "a?", "a_", "\uff5e", "\U0001f600"]
    for sequence, key in enumerate(expected_order):
        assert manual_open(wire[key], nonce, sequence) == orjson.dumps(body[key]), key
    server = ResponseCipher(lookup)
    assert orjson.loads(server.decrypt_request(orjson.dumps(wire), plain_fields=())) == body


def test_custom_plain_fields() -> None:
    body = {"model": "m", "messages": ["hi"], "stream": True}
    client = RequestCipher(SECRET, SECRET_ID)
    wire = orjson.loads(client.encrypt_request(orjson.dumps(body), {"model", "stream"}))
    assert wire["stream"] is True and wire["model"] == "m"
    parse_token(wire["messages"])
    server = ResponseCipher(lookup)
    assert orjson.loads(server.decrypt_request(orjson.dumps(wire), {"model", "stream"})) == body


def test_plain_fields_must_not_be_a_string() -> None:
    with pytest.raises(FieldCipherError, match="not a string"):
        RequestCipher(SECRET, SECRET_ID).encrypt_request(b'{"model":"m"}', "model")


def test_default_plain_field_lists() -> None:
    assert frozenset({"model"}) == EMBEDDINGS_REQUEST_PLAIN_FIELDS
    assert frozenset({"id", "usage"}) == EMBEDDINGS_RESPONSE_PLAIN_FIELDS


def test_streamed_response_continues_sequence_numbers() -> None:
    client, server, _ = exchange(request_body())
    chunks = [{"id": "c", "object": "chunk", "n": i} for i in range(3)]
    sealed = [server.encrypt_response(orjson.dumps(c)) for c in chunks]
    assert [orjson.loads(client.decrypt_response(s)) for s in sealed] == chunks


def test_large_response_round_trip() -> None:
    """A big embeddings response (256 x 2560 floats) survives the round trip exactly."""
    rng = random.Random(7)
    body = {
        "id": "embd",
        "object": "list",
        "data": [
            {"index": i, "embedding": [rng.uniform(-1, 1) for _ in range(2560)]} for i in range(256)
        ],
        "model": "qwen3-embedding-4b",
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }
    client, server, _ = exchange(request_body())
    sealed = server.encrypt_response(orjson.dumps(body))
    assert orjson.loads(client.decrypt_response(sealed)) == body


# --------------------------------------------------------------------------- property tests

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_json_values = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=20,
)
_json_objects = st.dictionaries(st.text(), _json_values, max_size=8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=_json_objects, response=_json_objects)
def test_any_json_object_round_trips(request: dict[str, Any], response: dict[str, Any]) -> None:
    client = RequestCipher(SECRET, SECRET_ID)
    wire = client.encrypt_request(orjson.dumps(request))
    encrypted_keys = [k for k in request if k not in EMBEDDINGS_REQUEST_PLAIN_FIELDS]
    server = ResponseCipher(lookup)
    if not encrypted_keys:
        with pytest.raises(FieldCipherError, match="no encrypted fields"):
            server.decrypt_request(wire)
        return
    assert orjson.loads(server.decrypt_request(wire)) == request
    sealed = server.encrypt_response(orjson.dumps(response))
    assert orjson.loads(client.decrypt_response(sealed)) == response


@settings(max_examples=100, deadline=None)
@given(obj=_json_objects, plain=st.sets(st.text(max_size=3), max_size=3))
def test_round_trip_with_any_plain_fields(obj: dict[str, Any], plain: set[str]) -> None:
    client = RequestCipher(SECRET, SECRET_ID)
    wire = orjson.loads(client.encrypt_request(orjson.dumps(obj), plain))
    for key, value in wire.items():
        if key in plain:
            assert value == obj[key]
        else:
            parse_token(value)
    if any(k not in plain for k in obj):
        server = ResponseCipher(lookup)
        assert orjson.loads(server.decrypt_request(orjson.dumps(wire), plain)) == obj


# --------------------------------------------------------------------------- tampering


def _flip_hex_byte(token: str, part: str, index: int) -> str:
    parts = parse_token(token)
    data = bytearray(bytes.fromhex(parts[part]))
    data[index] ^= 0x01
    parts[part] = data.hex()
    return f"{parts['id']}:{parts['nonce']}:{parts['iv']}:{parts['ct']}"


def _all_flips(wire: dict[str, Any], plain: frozenset[str]) -> list[tuple[str, str, int]]:
    flips = []
    for key, value in wire.items():
        if key in plain:
            continue
        parts = parse_token(value)
        for part in ("nonce", "iv", "ct"):
            flips += [(key, part, i) for i in range(len(parts[part]) // 2)]
    return flips


def test_flipping_any_byte_of_any_request_field_fails() -> None:
    body = {"model": "m", "input": [MARKER], "user": MARKER}
    client = RequestCipher(SECRET, SECRET_ID)
    wire = orjson.loads(client.encrypt_request(orjson.dumps(body)))
    flips = _all_flips(wire, EMBEDDINGS_REQUEST_PLAIN_FIELDS)
    assert len(flips) > 100
    for key, part, index in flips:
        tampered = dict(wire, **{key: _flip_hex_byte(wire[key], part, index)})
        with pytest.raises(FieldCipherError) as info:
            ResponseCipher(lookup).decrypt_request(orjson.dumps(tampered))
        assert_clean(info.value)
        assert repr(key) in str(info.value)


def test_flipping_any_byte_of_any_response_field_fails() -> None:
    client, server, _ = exchange(request_body())
    body = {"id": "r", "data": [MARKER], "model": MARKER, "usage": {}}
    wire = orjson.loads(server.encrypt_response(orjson.dumps(body)))
    for key, part, index in _all_flips(wire, EMBEDDINGS_RESPONSE_PLAIN_FIELDS):
        tampered = dict(wire, **{key: _flip_hex_byte(wire[key], part, index)})
        with pytest.raises(FieldCipherError) as info:
            client.decrypt_response(orjson.dumps(tampered))
        assert_clean(info.value)
    # Failed attempts changed nothing: the genuine response still decrypts.
    assert orjson.loads(client.decrypt_response(orjson.dumps(wire))) == body


def test_flipped_tag_or_ciphertext_reports_authentication_failure() -> None:
    client = RequestCipher(SECRET, SECRET_ID)
    wire = orjson.loads(client.encrypt_request(orjson.dumps({"input": MARKER})))
    for index in (0, -1):
        parts = parse_token(wire["input"])
        ct_len = len(parts["ct"]) // 2
        tampered = {"input": _flip_hex_byte(wire["input"], "ct", index % ct_len)}
        with pytest.raises(FieldCipherError, match="authentication failed") as info:
            ResponseCipher(lookup).decrypt_request(orjson.dumps(tampered))
        assert_clean(info.value)


def test_wrong_secret_fails() -> None:
    client = RequestCipher(os.urandom(32), SECRET_ID)  # same ID, other key
    wire = client.encrypt_request(orjson.dumps({"input": MARKER}))
    with pytest.raises(FieldCipherError, match="authentication failed") as info:
        ResponseCipher(lookup).decrypt_request(wire)
    assert_clean(info.value)


def test_server_with_wrong_secret_fails_on_the_client() -> None:
    client = RequestCipher(SECRET, SECRET_ID)
    wire = client.encrypt_request(orjson.dumps({"input": "x"}))
    server = ResponseCipher(lambda _id: os.urandom(32))
    with pytest.raises(FieldCipherError, match="authentication failed"):
        server.decrypt_request(wire)


def test_unknown_secret_id() -> None:
    client = RequestCipher(SECRET, "unknown-id")
    wire = client.encrypt_request(orjson.dumps({"model": "m", "input": MARKER}))
    server = ResponseCipher(lookup)
    with pytest.raises(UnknownSecretError, match="no secret for ID") as info:
        server.decrypt_request(wire)
    assert "unknown-id" in str(info.value)
    assert isinstance(info.value, FieldCipherError)
    assert_clean(info.value)
    assert server.secret_id is None


def test_mixed_secret_ids_in_one_request() -> None:
    nonce = os.urandom(12)
    wire = {
        "a": manual_seal(b"1", nonce, 0),
        "b": manual_seal(b"2", nonce, 1, secret_id="other-id"),
    }
    with pytest.raises(FieldCipherError, match="another secret ID"):
        ResponseCipher(lookup).decrypt_request(orjson.dumps(wire), plain_fields=())


def test_mixed_nonces_in_one_request() -> None:
    nonce = os.urandom(12)
    wire = {"a": manual_seal(b"1", nonce, 0), "b": manual_seal(b"2", os.urandom(12), 1)}
    with pytest.raises(FieldCipherError, match="another request nonce"):
        ResponseCipher(lookup).decrypt_request(orjson.dumps(wire), plain_fields=())


def test_nonce_in_the_field_must_match_the_aad() -> None:
    """The embedded nonce is what the server authenticates: swapping it breaks the tag."""
    nonce, other = os.urandom(12), os.urandom(12)
    token = parse_token(manual_seal(MARKER.encode(), nonce, 0))
    forged = f"{token['id']}:{other.hex()}:{token['iv']}:{token['ct']}"
    with pytest.raises(FieldCipherError, match="authentication failed") as info:
        ResponseCipher(lookup).decrypt_request(orjson.dumps({"a": forged}), plain_fields=())
    assert_clean(info.value)


def test_response_under_another_requests_nonce_fails() -> None:
    client_a, server_a, _ = exchange(request_body())
    client_b, _, _ = exchange(request_body())
    sealed = server_a.encrypt_response(orjson.dumps({"data": MARKER}))
    with pytest.raises(FieldCipherError, match="another request's nonce") as info:
        client_b.decrypt_response(sealed)
    assert_clean(info.value)
    # Rewriting the nonce text to client B's doesn't help: the AAD check fails.
    wire = orjson.loads(sealed)
    b_nonce = client_b._nonce.hex()
    token = parse_token(wire["data"])
    wire["data"] = f"{token['id']}:{b_nonce}:{token['iv']}:{token['ct']}"
    with pytest.raises(FieldCipherError, match="authentication failed") as info:
        client_b.decrypt_response(orjson.dumps(wire))
    assert_clean(info.value)
    assert orjson.loads(client_a.decrypt_response(sealed)) == {"data": MARKER}


def test_response_with_another_secret_id_fails() -> None:
    client = RequestCipher(SECRET, SECRET_ID)
    wire = orjson.loads(client.encrypt_request(b'{"input":"x"}'))
    nonce = bytes.fromhex(parse_token(wire["input"])["nonce"])
    response = {"data": manual_seal(MARKER.encode(), nonce, 0, secret_id="other")}
    with pytest.raises(FieldCipherError, match="secret ID") as info:
        client.decrypt_response(orjson.dumps(response))
    assert_clean(info.value)


def test_wrong_sequence_number_fails() -> None:
    nonce = os.urandom(12)
    wire = {"a": manual_seal(b'"x"', nonce, 1), "b": manual_seal(b'"y"', nonce, 0)}
    with pytest.raises(FieldCipherError, match="authentication failed"):
        ResponseCipher(lookup).decrypt_request(orjson.dumps(wire), plain_fields=())
    # The same values with the right numbering are accepted.
    good = {"a": wire["b"], "b": wire["a"]}
    out = ResponseCipher(lookup).decrypt_request(orjson.dumps(good), plain_fields=())
    assert orjson.loads(out) == {"a": "y", "b": "x"}


def test_swapped_fields_fail() -> None:
    client = RequestCipher(SECRET, SECRET_ID)
    wire = orjson.loads(client.encrypt_request(orjson.dumps(request_body())))
    wire["input"], wire["user"] = wire["user"], wire["input"]
    with pytest.raises(FieldCipherError, match="authentication failed") as info:
        ResponseCipher(lookup).decrypt_request(orjson.dumps(wire))
    assert_clean(info.value)


def test_replayed_response_fails() -> None:
    client, server, _ = exchange(request_body())
    sealed = server.encrypt_response(orjson.dumps({"data": MARKER}))
    client.decrypt_response(sealed)
    with pytest.raises(FieldCipherError, match="authentication failed") as info:
        client.decrypt_response(sealed)  # its sequence number is used up
    assert_clean(info.value)


def test_dropped_field_fails() -> None:
    client, server, _ = exchange(request_body())
    wire = orjson.loads(server.encrypt_response(orjson.dumps(response_body())))
    del wire["created"]  # sequence 0: every later field now gets the wrong number
    with pytest.raises(FieldCipherError, match="authentication failed"):
        client.decrypt_response(orjson.dumps(wire))


def test_decrypted_text_must_be_json() -> None:
    nonce = os.urandom(12)
    wire = {"a": manual_seal(f"{MARKER} not json".encode(), nonce, 0)}
    with pytest.raises(FieldCipherError, match="not valid JSON") as info:
        ResponseCipher(lookup).decrypt_request(orjson.dumps(wire), plain_fields=())
    assert_clean(info.value)
    # Nor may a field smuggle extra keys into the object.
    wire = {"a": manual_seal(b'1,"model":"x"', nonce, 0)}
    with pytest.raises(FieldCipherError, match="not valid JSON"):
        ResponseCipher(lookup).decrypt_request(orjson.dumps(wire), plain_fields=())


# --------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (5, "is not encrypted"),
        ([MARKER], "is not encrypted"),
        (MARKER, "not in the encrypted format"),
        ("id:00:00", "not in the encrypted format"),
        ("id:a:b:c:d", "not in the encrypted format"),
        (f"{SECRET_ID}:zz{'0' * 22}:{'0' * 24}:{'0' * 40}", "nonce is not hex"),
        (f"{SECRET_ID}:{'0' * 22}:{'0' * 24}:{'0' * 40}", "nonce must be 12 bytes"),
        (f"{SECRET_ID}:{'0' * 24}:{'0' * 26}:{'0' * 40}", "IV must be 12 bytes"),
        (f"{SECRET_ID}:{'0' * 24}:{'0' * 24}:{'0' * 30}", "shorter than the GCM tag"),
        (f"{SECRET_ID}:{'0' * 24}:{'0' * 24}:{'0' * 39}", "ciphertext is not hex"),
        (f"{SECRET_ID}:{'0' * 24}:{'0' * 24}:00 11{'0' * 36}", "ciphertext is not hex"),
    ],
)
def test_malformed_encrypted_field(value: Any, message: str) -> None:
    wire = {"model": "m", "input": value}
    with pytest.raises(FieldCipherError, match=message) as info:
        ResponseCipher(lookup).decrypt_request(orjson.dumps(wire))
    assert_clean(info.value)
    client = RequestCipher(SECRET, SECRET_ID)
    with pytest.raises(FieldCipherError, match=message):
        client.decrypt_response(orjson.dumps({"id": "r", "data": value}))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not valid JSON"),
        (f'{{"input": "{MARKER}"'.encode(), "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
    ],
)
def test_malformed_bodies(body: bytes, message: str) -> None:
    actions: list[Callable[[], object]] = [
        lambda: RequestCipher(SECRET, SECRET_ID).encrypt_request(body),
        lambda: RequestCipher(SECRET, SECRET_ID).decrypt_response(body),
        lambda: ResponseCipher(lookup).decrypt_request(body),
    ]
    for action in actions:
        with pytest.raises(FieldCipherError, match=message) as info:
            action()
        assert_clean(info.value)


def test_request_without_encrypted_fields_is_refused_by_the_server() -> None:
    client = RequestCipher(SECRET, SECRET_ID)
    wire = client.encrypt_request(b'{"model":"m"}')
    assert orjson.loads(wire) == {"model": "m"}
    with pytest.raises(FieldCipherError, match="no encrypted fields"):
        ResponseCipher(lookup).decrypt_request(wire)


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_secret_must_be_32_bytes(size: int) -> None:
    with pytest.raises(FieldCipherError, match=f"32 bytes, got {size}"):
        RequestCipher(b"\x00" * size, SECRET_ID)


def test_secret_id_rules() -> None:
    with pytest.raises(FieldCipherError, match="must not contain ':'"):
        RequestCipher(SECRET, "a:b")
    with pytest.raises(FieldCipherError, match="non-empty"):
        RequestCipher(SECRET, "")


def test_secret_ids_with_json_special_characters_round_trip() -> None:
    secret_id = 'id "with" \\ quotes\n'

    def lookup_special(candidate: str) -> bytes | None:
        return SECRET if candidate == secret_id else None

    client = RequestCipher(SECRET, secret_id)
    server = ResponseCipher(lookup_special)
    wire = client.encrypt_request(b'{"input":"x"}')
    assert orjson.loads(server.decrypt_request(wire)) == {"input": "x"}
    assert server.secret_id == secret_id
    sealed = server.encrypt_response(b'{"data":[1]}')
    assert orjson.loads(client.decrypt_response(sealed)) == {"data": [1]}


def test_lookup_returning_a_wrong_size_secret() -> None:
    wire = RequestCipher(SECRET, SECRET_ID).encrypt_request(b'{"input":"x"}')
    with pytest.raises(FieldCipherError, match="not 32 bytes"):
        ResponseCipher(lambda _id: b"short").decrypt_request(wire)


# --------------------------------------------------------------------------- state rules


def test_one_request_per_request_cipher() -> None:
    client = RequestCipher(SECRET, SECRET_ID)
    client.encrypt_request(b'{"input":"x"}')
    with pytest.raises(FieldCipherError, match="already encrypted a request"):
        client.encrypt_request(b'{"input":"y"}')


def test_no_request_after_decrypting_a_response() -> None:
    client, server, _ = exchange(request_body())
    client.decrypt_response(server.encrypt_response(b'{"data":1}'))
    with pytest.raises(FieldCipherError, match="after decrypting a response"):
        client.encrypt_request(b'{"input":"y"}')
    fresh = RequestCipher(SECRET, SECRET_ID)
    fresh.decrypt_response(b'{"id":"only plain"}')
    with pytest.raises(FieldCipherError, match="after decrypting a response"):
        fresh.encrypt_request(b'{"input":"y"}')


def test_every_request_cipher_has_its_own_nonce() -> None:
    nonces = set()
    for _ in range(20):
        wire = orjson.loads(RequestCipher(SECRET, SECRET_ID).encrypt_request(b'{"input":"x"}'))
        nonces.add(parse_token(wire["input"])["nonce"])
    assert len(nonces) == 20


def test_server_needs_a_request_before_a_response() -> None:
    server = ResponseCipher(lookup)
    with pytest.raises(FieldCipherError, match="no request decrypted"):
        server.encrypt_response(b'{"data":1}')


def test_server_cipher_handles_one_request() -> None:
    _, server, wire = exchange(request_body())
    with pytest.raises(FieldCipherError, match="already handled a request"):
        server.decrypt_request(orjson.dumps(wire))


def test_failed_server_decryption_leaves_no_state() -> None:
    server = ResponseCipher(lookup)
    nonce = os.urandom(12)
    bad = {"a": manual_seal(b"1", nonce, 5)}
    with pytest.raises(FieldCipherError):
        server.decrypt_request(orjson.dumps(bad), plain_fields=())
    assert server.secret_id is None
    with pytest.raises(FieldCipherError, match="no request decrypted"):
        server.encrypt_response(b'{"data":1}')


def test_reprs_hide_the_secret() -> None:
    client = RequestCipher(SECRET, SECRET_ID)
    server = ResponseCipher(lookup)
    for obj in (client, server):
        assert SECRET.hex() not in repr(obj) and repr(SECRET) not in repr(obj)


# --------------------------------------------------------------------------- object variants


def test_decrypt_response_object_matches_decrypt_response() -> None:
    client_a, server_a, _ = exchange(request_body())
    client_b, server_b, _ = exchange(request_body())
    body = response_body()
    assert client_a.decrypt_response_object(server_a.encrypt_response(orjson.dumps(body))) == body
    assert orjson.loads(client_b.decrypt_response(server_b.encrypt_response_object(body))) == body
    # State rules hold for the object variant too.
    with pytest.raises(FieldCipherError, match="after decrypting a response"):
        client_a.encrypt_request(b'{"input":"x"}')


def test_encrypt_response_object_takes_numpy_arrays() -> None:
    np = pytest.importorskip("numpy")
    vectors = np.array([[0.1, -0.2, 0.3], [1.0, 2.0, 3.0]], dtype=np.float32)
    client, server, _ = exchange(request_body())
    body = {"id": "e", "data": [{"index": i, "embedding": v} for i, v in enumerate(vectors)]}
    plain = client.decrypt_response_object(server.encrypt_response_object(body))
    got = np.array([d["embedding"] for d in plain["data"]], dtype=np.float32)
    assert np.array_equal(got, vectors)


def test_encrypt_response_object_refuses_non_json_values() -> None:
    _, server, _ = exchange(request_body())
    with pytest.raises(FieldCipherError, match="isn't JSON"):
        server.encrypt_response_object({"data": {1, 2}})
    with pytest.raises(FieldCipherError, match="must be a mapping"):
        server.encrypt_response_object([1, 2])  # type: ignore[arg-type]
    # The failed calls used no sequence numbers.
    client_check = server.encrypt_response_object({"data": 1})
    assert parse_token(orjson.loads(client_check)["data"])


# --------------------------------------------------------------------------- large answers


def _large_answer() -> dict[str, Any]:
    rows = [{"object": "embedding", "index": i, "embedding": "QUJD" * 600} for i in range(64)]
    return {
        "id": "embd",
        "object": "list",
        "data": rows,
        "model": "qwen3-embedding-4b",
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }


def _sealed_large(mutate: Callable[[bytes], bytes] = lambda b: b) -> tuple[RequestCipher, bytes]:
    client, server, _ = exchange(request_body())
    return client, mutate(server.encrypt_response(orjson.dumps(_large_answer())))


def test_large_answer_is_decrypted_without_parsing_its_data_token() -> None:
    client, sealed = _sealed_large()
    cut = _fieldcipher._load_cutting_data(sealed)
    assert cut is not None and cut[2] - cut[1] > 100_000
    assert client.decrypt_response_object(sealed) == _large_answer()


def _data_first(sealed: bytes) -> bytes:
    obj = orjson.loads(sealed)
    return orjson.dumps({"data": obj.pop("data"), **obj})


def _data_last(sealed: bytes) -> bytes:
    obj = orjson.loads(sealed)
    data = obj.pop("data")
    return orjson.dumps({**obj, "data": data})


@pytest.mark.parametrize(
    "rewrite",
    [
        # a nested `data` string before the real one (in the plain `usage`)
        lambda b: _data_last(b).replace(
            b'"usage":{', b'"usage":{"data":"' + b"ab" * 40_000 + b'",', 1
        ),
        # the key twice: JSON takes the last, and so must we
        lambda b: b'{"data":"' + b"cd" * 40_000 + b'",' + _data_first(b)[1:],
        # whitespace, escapes: not cut, parsed whole
        lambda b: _data_first(b).replace(b'"data":"', b'"data" : "', 1),
        lambda b: _data_first(b).replace(b'"data":"', b'"data":"\\u0020', 1),
    ],
    ids=["nested-key", "repeated-key", "whitespace", "escape"],
)
def test_cut_is_taken_only_when_it_is_the_top_level_data(rewrite: Callable[[bytes], bytes]) -> None:
    client, sealed = _sealed_large(rewrite)
    try:
        whole: Any = orjson.loads(sealed)
    except orjson.JSONDecodeError:
        whole = None
    cut = _fieldcipher._load_cutting_data(sealed)
    if cut is not None:  # the cut is exactly the top-level value of the whole parse
        assert sealed[cut[1] : cut[2]].decode() == whole["data"]
    if isinstance(whole, dict) and "\\u0020" not in sealed.decode():
        assert client.decrypt_response_object(sealed) == {
            **_large_answer(),
            "usage": whole["usage"],
        }
    else:
        with pytest.raises(FieldCipherError):
            client.decrypt_response_object(sealed)


@pytest.mark.parametrize("where", ["id", "nonce", "iv", "ciphertext", "tag", "colon", "quote"])
def test_large_answer_tampering_fails_with_the_usual_message(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def tamper(sealed: bytes) -> bytes:
        obj = orjson.loads(sealed)
        token = obj["data"]
        i = {
            "id": 0,
            "nonce": token.index(":") + 3,
            "colon": token.index(":"),
            "iv": token.index(":") + 30,
            "ciphertext": len(token) // 2,
            "tag": len(token) - 3,
            "quote": len(token) - 1,
        }[where]
        swap = {"colon": "f", "quote": '"'}.get(where, "0" if token[i] != "0" else "1")
        obj["data"] = token[:i] + swap + token[i + 1 :]
        return orjson.dumps(obj)

    messages = []
    for cutting in (True, False):
        if not cutting:
            monkeypatch.setattr(_fieldcipher, "_CUT_MIN_BYTES", 1 << 40)
        client, sealed = _sealed_large(tamper)
        with pytest.raises(FieldCipherError) as caught:
            client.decrypt_response_object(sealed)
        assert_clean(caught.value)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
