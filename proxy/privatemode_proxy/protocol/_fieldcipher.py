"""Field encryption of inference requests and responses (protocol §3).

Every selected top-level field of a JSON body is replaced by the JSON string
``"<secretID>:<hex nonce>:<hex iv>:<hex ciphertext+tag>"``: AES-256-GCM under the exchanged
secret, a fresh 12-byte IV per field, and additional data ``nonce || uint32_le(sequence)``. One
request/response exchange shares one 12-byte request nonce; the client numbers the request fields
it encrypts 0, 1, 2, …, the server numbers its response fields separately from 0.

Fields are processed in the order of their sorted keys, as the official forwarder sorts them:
the key with ``.``, ``?`` and ``*`` escaped by a backslash (gjson path syntax), compared
byte-wise as UTF-8. The plaintext of a field is its raw JSON value text; decrypted text is put
back in place as JSON, not as a string.

Error messages name the field and the reason, never a value, plaintext or key.
"""

from __future__ import annotations

import binascii
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "EMBEDDINGS_REQUEST_PLAIN_FIELDS",
    "EMBEDDINGS_RESPONSE_PLAIN_FIELDS",
    "FieldCipherError",
    "RequestCipher",
    "ResponseCipher",
    "UnknownSecretError",
]

EMBEDDINGS_REQUEST_PLAIN_FIELDS: frozenset[str] = frozenset({"model"})
EMBEDDINGS_RESPONSE_PLAIN_FIELDS: frozenset[str] = frozenset({"id", "usage"})

_KEY_SIZE = 32  # AES-256
_NONCE_SIZE = 12  # the request nonce
_IV_SIZE = 12  # per-field GCM IV
_TAG_SIZE = 16
_MAX_SEQUENCE = 0xFFFFFFFF
_MAX_NAME_IN_MESSAGE = 64


class FieldCipherError(ValueError):
    """A body could not be encrypted or decrypted. The message never contains plaintext or keys."""


class UnknownSecretError(FieldCipherError):
    """The request is encrypted under a secret ID the server doesn't know."""


def _name(text: str) -> str:
    """A field name or ID for an error message: quoted, and cut short if long."""
    if len(text) > _MAX_NAME_IN_MESSAGE:
        text = text[:_MAX_NAME_IN_MESSAGE] + "…"
    return repr(text)


def _check_secret(secret: object) -> bytes:
    if not isinstance(secret, (bytes, bytearray, memoryview)):
        raise FieldCipherError(f"secret must be bytes, got {type(secret).__name__}")
    key = bytes(secret)
    if len(key) != _KEY_SIZE:
        raise FieldCipherError(f"secret must be {_KEY_SIZE} bytes, got {len(key)}")
    return key


def _check_secret_id(secret_id: object) -> str:
    if not isinstance(secret_id, str) or not secret_id:
        raise FieldCipherError("secret ID must be a non-empty string")
    if ":" in secret_id:
        raise FieldCipherError("secret ID must not contain ':' (the field separator)")
    return secret_id


def _sort_key(key: str) -> bytes:
    """The official forwarder's field order: gjson-escaped key, compared as UTF-8 bytes."""
    escaped = key.replace(".", "\\.").replace("?", "\\?").replace("*", "\\*")
    return escaped.encode("utf-8", "surrogatepass")


def _fields_in_order(obj: Mapping[str, Any], plain_fields: Iterable[str]) -> list[str]:
    if isinstance(plain_fields, (str, bytes)):
        raise FieldCipherError("plain_fields must be a collection of field names, not a string")
    plain = frozenset(plain_fields)
    return sorted((key for key in obj if key not in plain), key=_sort_key)


def _load_object(body: bytes, what: str) -> dict[str, Any]:
    if not isinstance(body, (bytes, bytearray, memoryview, str)):
        raise FieldCipherError(f"{what} body must be bytes, got {type(body).__name__}")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        # `from None`: the decode error carries the whole document.
        raise FieldCipherError(f"{what} body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise FieldCipherError(f"{what} body must be a JSON object, got {type(obj).__name__}")
    return obj


def _aad(nonce: bytes, sequence: int) -> bytes:
    if sequence > _MAX_SEQUENCE:
        raise FieldCipherError("too many encrypted fields for one exchange (sequence overflow)")
    return nonce + struct.pack("<I", sequence)


def _dumps(value: Any) -> bytes:
    """Compact JSON text of a value (numpy arrays allowed, for the local backend's vectors)."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def _dump_object(obj: Mapping[str, Any], replaced: Mapping[str, tuple[bytes, ...]]) -> bytes:
    """Serialise ``obj`` in its own key order, splicing in raw JSON text for ``replaced`` keys.

    Replacements are given as pieces so a large value is copied only once, into the result.
    """
    parts: list[bytes] = [b"{"]
    for index, (key, value) in enumerate(obj.items()):
        if index:
            parts.append(b",")
        parts.append(orjson.dumps(key))
        parts.append(b":")
        raw = replaced.get(key)
        if raw is None:
            parts.append(_dumps(value))
        else:
            parts.extend(raw)
    parts.append(b"}")
    return b"".join(parts)


class _Sealer:
    """Encrypts one field value into the quoted JSON string ``"id:nonce:iv:ct"``."""

    __slots__ = ("_aead", "_nonce", "_prefix")

    def __init__(self, aead: AESGCM, secret_id: str, nonce: bytes) -> None:
        self._aead = aead
        self._nonce = nonce
        # Opening quote, ID and nonce (JSON-escaped by orjson) are the same for every field;
        # the hex that follows never needs escaping.
        self._prefix = orjson.dumps(f"{secret_id}:{nonce.hex()}:")[:-1]

    def seal(self, plaintext: bytes, sequence: int) -> tuple[bytes, ...]:
        """The JSON string token, in pieces for :func:`_dump_object`."""
        iv = os.urandom(_IV_SIZE)
        ciphertext = self._aead.encrypt(iv, plaintext, _aad(self._nonce, sequence))
        return (self._prefix, binascii.hexlify(iv), b":", binascii.hexlify(ciphertext), b'"')


def _encrypt_object(
    obj: Mapping[str, Any], plain_fields: Iterable[str], sealer: _Sealer, first_sequence: int
) -> tuple[bytes, int]:
    sequence = first_sequence
    encrypted: dict[str, tuple[bytes, ...]] = {}
    for key in _fields_in_order(obj, plain_fields):
        encrypted[key] = sealer.seal(_dumps(obj[key]), sequence)
        sequence += 1
    return _dump_object(obj, encrypted), sequence


@dataclass(frozen=True, slots=True)
class _Token:
    secret_id: str
    nonce: bytes
    iv: bytes
    ciphertext: bytes


def _unhex(text: str, key: str, part: str) -> bytes:
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise FieldCipherError(f"field {_name(key)}: {part} is not hex") from None


def _parse_token(value: object, key: str) -> _Token:
    if not isinstance(value, str):
        raise FieldCipherError(
            f"field {_name(key)} is not encrypted: expected a string "
            f"'id:nonce:iv:ciphertext', got a JSON {type(value).__name__}"
        )
    # find() instead of split(): the ciphertext can be tens of megabytes.
    first = value.find(":")
    second = value.find(":", first + 1) if first >= 0 else -1
    third = value.find(":", second + 1) if second >= 0 else -1
    if third < 0 or value.find(":", third + 1) >= 0:
        raise FieldCipherError(
            f"field {_name(key)} is not in the encrypted format 'id:nonce:iv:ciphertext'"
        )
    token = _Token(
        secret_id=value[:first],
        nonce=_unhex(value[first + 1 : second], key, "nonce"),
        iv=_unhex(value[second + 1 : third], key, "IV"),
        ciphertext=_unhex(value[third + 1 :], key, "ciphertext"),
    )
    if len(token.nonce) != _NONCE_SIZE:
        raise FieldCipherError(f"field {_name(key)}: nonce must be {_NONCE_SIZE} bytes")
    if len(token.iv) != _IV_SIZE:
        raise FieldCipherError(f"field {_name(key)}: IV must be {_IV_SIZE} bytes")
    if len(token.ciphertext) < _TAG_SIZE:
        raise FieldCipherError(f"field {_name(key)}: ciphertext is shorter than the GCM tag")
    return token


_CUT_KEY = "data"
_CUT_PREFIX = b'"data":"'
_CUT_MIN_BYTES = 1 << 16


def _load_cutting_data(body: bytes) -> tuple[dict[str, Any], int, int] | None:
    """Parse a large response without turning its `data` token into a Python string.

    A 2,048 x 384 answer is an 8.6 MB object holding one 8.6 MB hex token; parsing it copies the
    token into a str only for `unhexlify` to read it again. Here the token is located in the raw
    bytes and the small rest is parsed with a random placeholder in its place. The cut is
    trusted only if it was exactly the top-level `data` string: a JSON string without escapes
    (no backslash before its closing quote) whose placeholder the parse then finds at the top
    level. Anything else (nested or repeated keys, escapes, whitespace around the colon) returns
    None, and the caller parses the whole body as before. Returns the object and the token's
    byte range in `body`.
    """
    if not isinstance(body, bytes) or len(body) < _CUT_MIN_BYTES:
        return None
    first = body.find(_CUT_PREFIX)
    if first < 0:
        return None
    first += len(_CUT_PREFIX)
    end = body.find(b'"', first)
    if end - first < _CUT_MIN_BYTES or body.find(b"\\", first, end) >= 0:
        return None
    placeholder = os.urandom(12).hex()
    try:
        obj = orjson.loads(b"".join((body[:first], placeholder.encode(), body[end:])))
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get(_CUT_KEY) != placeholder:
        return None
    return obj, first, end


def _parse_cut_token(body: bytes, first: int, end: int) -> _Token:
    """`_parse_token` for a token given as a byte range; raises `FieldCipherError` on anything
    unexpected (the caller then takes the slow path, which words the error)."""
    c1 = body.find(b":", first, end)
    c2 = body.find(b":", c1 + 1, end) if c1 >= 0 else -1
    c3 = body.find(b":", c2 + 1, end) if c2 >= 0 else -1
    if c3 < 0 or body.find(b":", c3 + 1, end) >= 0:
        raise FieldCipherError("not in the encrypted format")
    try:
        token = _Token(
            secret_id=body[first:c1].decode("utf-8"),
            nonce=binascii.unhexlify(body[c1 + 1 : c2]),
            iv=binascii.unhexlify(body[c2 + 1 : c3]),
            ciphertext=binascii.unhexlify(memoryview(body)[c3 + 1 : end]),
        )
    except (binascii.Error, ValueError):
        raise FieldCipherError("not hex") from None
    if len(token.nonce) != _NONCE_SIZE or len(token.iv) != _IV_SIZE:
        raise FieldCipherError("bad sizes")
    if len(token.ciphertext) < _TAG_SIZE:
        raise FieldCipherError("short ciphertext")
    return token


def _open(aead: AESGCM, token: _Token, nonce: bytes, sequence: int, key: str) -> tuple[bytes, Any]:
    """Decrypt one field; returns its raw JSON text and the parsed value."""
    try:
        plaintext = aead.decrypt(token.iv, token.ciphertext, _aad(nonce, sequence))
    except InvalidTag:
        raise FieldCipherError(
            f"field {_name(key)}: authentication failed (wrong secret, nonce or sequence "
            "number, or the ciphertext was altered)"
        ) from None
    try:
        # Also keeps a field from smuggling extra keys into the object (e.g. `1,"id":"x"`).
        value = orjson.loads(plaintext)
    except orjson.JSONDecodeError:
        raise FieldCipherError(f"field {_name(key)}: decrypted value is not valid JSON") from None
    return plaintext, value


def _splice_raw(obj: Mapping[str, Any], opened: Mapping[str, tuple[bytes, Any]]) -> bytes:
    return _dump_object(obj, {key: (raw,) for key, (raw, _) in opened.items()})


class RequestCipher:
    """Client side: encrypts one request and decrypts its response.

    Make a new one for every request and for every retry that re-encrypts: each has its own
    random request nonce, and a cipher that has encrypted a request (or decrypted a response)
    refuses to encrypt another.
    """

    __slots__ = ("_aead", "_decrypted", "_encrypted", "_next_response_seq", "_nonce", "_secret_id")

    def __init__(self, secret: bytes, secret_id: str) -> None:
        self._aead = AESGCM(_check_secret(secret))
        self._secret_id = _check_secret_id(secret_id)
        self._nonce = os.urandom(_NONCE_SIZE)
        self._encrypted = False
        self._decrypted = False
        self._next_response_seq = 0

    @property
    def secret_id(self) -> str:
        return self._secret_id

    def encrypt_request(
        self, body: bytes, plain_fields: Iterable[str] = EMBEDDINGS_REQUEST_PLAIN_FIELDS
    ) -> bytes:
        """Encrypt every top-level field of the JSON object ``body`` except ``plain_fields``."""
        if self._decrypted:
            raise FieldCipherError("can't encrypt another request after decrypting a response")
        if self._encrypted:
            raise FieldCipherError(
                "this RequestCipher already encrypted a request; use a new one per request"
            )
        obj = _load_object(body, "request")
        sealer = _Sealer(self._aead, self._secret_id, self._nonce)
        sealed, _ = _encrypt_object(obj, plain_fields, sealer, 0)
        self._encrypted = True
        return sealed

    def decrypt_response(
        self, body: bytes, plain_fields: Iterable[str] = EMBEDDINGS_RESPONSE_PLAIN_FIELDS
    ) -> bytes:
        """Decrypt the encrypted fields of a response body; plain fields pass through.

        Sequence numbers continue across calls (a streamed response is several bodies). On
        failure nothing changes, so the caller can fall back to the raw body.
        """
        obj, opened, sequence = self._open_response(body, plain_fields)
        out = _splice_raw(obj, opened)
        self._next_response_seq, self._decrypted = sequence, True
        return out

    def decrypt_response_object(
        self, body: bytes, plain_fields: Iterable[str] = EMBEDDINGS_RESPONSE_PLAIN_FIELDS
    ) -> dict[str, Any]:
        """Like :meth:`decrypt_response`, but returns the parsed object.

        Saves parsing a large response twice (decryption parses each field to check it).
        """
        obj, opened, sequence = self._open_response(body, plain_fields)
        for key, (_, value) in opened.items():
            obj[key] = value
        self._next_response_seq, self._decrypted = sequence, True
        return obj

    def _open_response(
        self, body: bytes, plain_fields: Iterable[str]
    ) -> tuple[dict[str, Any], dict[str, tuple[bytes, Any]], int]:
        cut = _load_cutting_data(body)
        if cut is not None:
            try:
                return self._open_fields(cut[0], plain_fields, (body, cut[1], cut[2]))
            except FieldCipherError:
                pass  # the whole parse below words the error as it always has
        return self._open_fields(_load_object(body, "response"), plain_fields, None)

    def _open_fields(
        self,
        obj: dict[str, Any],
        plain_fields: Iterable[str],
        cut: tuple[bytes, int, int] | None,
    ) -> tuple[dict[str, Any], dict[str, tuple[bytes, Any]], int]:
        sequence = self._next_response_seq
        opened: dict[str, tuple[bytes, Any]] = {}
        for key in _fields_in_order(obj, plain_fields):
            if cut is not None and key == _CUT_KEY:
                token = _parse_cut_token(*cut)
            else:
                token = _parse_token(obj[key], key)
            if token.secret_id != self._secret_id:
                raise FieldCipherError(
                    f"field {_name(key)} is encrypted under secret ID {_name(token.secret_id)}, "
                    f"not this request's {_name(self._secret_id)}"
                )
            if token.nonce != self._nonce:
                raise FieldCipherError(f"field {_name(key)} carries another request's nonce")
            opened[key] = _open(self._aead, token, self._nonce, sequence, key)
            sequence += 1
        return obj, opened, sequence

    def __repr__(self) -> str:
        return f"RequestCipher(secret_id={self._secret_id!r}, secret=<hidden>)"


class ResponseCipher:
    """Server side: decrypts one request, then encrypts its response with the request's nonce.

    ``lookup_secret`` maps a secret ID to its 32-byte secret, or ``None`` when unknown.
    """

    __slots__ = ("_aead", "_lookup", "_next_response_seq", "_nonce", "_secret_id", "_used")

    def __init__(self, lookup_secret: Callable[[str], bytes | None]) -> None:
        self._lookup = lookup_secret
        self._aead: AESGCM | None = None
        self._secret_id: str | None = None
        self._nonce: bytes | None = None
        self._next_response_seq = 0
        self._used = False

    @property
    def secret_id(self) -> str | None:
        """The secret ID of the decrypted request (``None`` before a successful decryption)."""
        return self._secret_id

    def decrypt_request(
        self, body: bytes, plain_fields: Iterable[str] = EMBEDDINGS_REQUEST_PLAIN_FIELDS
    ) -> bytes:
        """Decrypt every top-level field except ``plain_fields``; each must be encrypted.

        The first field (in processing order) fixes the secret ID and the request nonce; a field
        under another ID or nonce is refused. An unknown ID raises :class:`UnknownSecretError`.
        """
        if self._used:
            raise FieldCipherError("this ResponseCipher already handled a request; use a new one")
        obj = _load_object(body, "request")
        order = _fields_in_order(obj, plain_fields)
        if not order:
            raise FieldCipherError("request has no encrypted fields")
        aead: AESGCM | None = None
        secret_id = ""
        nonce = b""
        opened: dict[str, tuple[bytes, Any]] = {}
        for sequence, key in enumerate(order):
            token = _parse_token(obj[key], key)
            if aead is None:
                secret_id = token.secret_id
                nonce = token.nonce
                aead = self._cipher_for(secret_id)
            elif token.secret_id != secret_id:
                raise FieldCipherError(
                    f"field {_name(key)} is encrypted under another secret ID than the rest "
                    "of the request"
                )
            elif token.nonce != nonce:
                raise FieldCipherError(f"field {_name(key)} carries another request nonce")
            opened[key] = _open(aead, token, nonce, sequence, key)
        out = _splice_raw(obj, opened)
        self._aead, self._secret_id, self._nonce, self._used = aead, secret_id, nonce, True
        return out

    def _cipher_for(self, secret_id: str) -> AESGCM:
        secret = self._lookup(secret_id)
        if secret is None:
            raise UnknownSecretError(f"no secret for ID {_name(secret_id)}")
        if not isinstance(secret, (bytes, bytearray, memoryview)) or len(secret) != _KEY_SIZE:
            raise FieldCipherError(f"the secret stored for ID {_name(secret_id)} is not 32 bytes")
        return AESGCM(bytes(secret))

    def encrypt_response(
        self, body: bytes, plain_fields: Iterable[str] = EMBEDDINGS_RESPONSE_PLAIN_FIELDS
    ) -> bytes:
        """Encrypt every top-level field except ``plain_fields`` under the request's nonce.

        Sequence numbers continue across calls (for a streamed response).
        """
        return self.encrypt_response_object(_load_object(body, "response"), plain_fields)

    def encrypt_response_object(
        self,
        obj: Mapping[str, Any],
        plain_fields: Iterable[str] = EMBEDDINGS_RESPONSE_PLAIN_FIELDS,
    ) -> bytes:
        """Like :meth:`encrypt_response` for a response not yet serialised (saves a parse).

        Values may include numpy arrays (serialised by orjson).
        """
        if self._aead is None or self._secret_id is None or self._nonce is None:
            raise FieldCipherError("no request decrypted yet: the response needs its nonce")
        if not isinstance(obj, Mapping):
            raise FieldCipherError(f"response must be a mapping, got {type(obj).__name__}")
        sealer = _Sealer(self._aead, self._secret_id, self._nonce)
        try:
            sealed, sequence = _encrypt_object(obj, plain_fields, sealer, self._next_response_seq)
        except orjson.JSONEncodeError:
            raise FieldCipherError("response contains a value that isn't JSON") from None
        self._next_response_seq = sequence
        return sealed

    def __repr__(self) -> str:
        return f"ResponseCipher(secret_id={self._secret_id!r})"
