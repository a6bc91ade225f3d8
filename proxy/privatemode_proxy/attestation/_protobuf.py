"""Protobuf (proto3) wire format, hand-written: only what the TEE evidence messages need.

Contrast's `raw_attestation_doc` is a go-sev-guest `sevsnp.Attestation` or a go-tdx-guest
`tdx.QuoteV4` message. The messages are small and fixed; a generated protobuf runtime would be a
heavy dependency for a few dozen lines. Decoding raises `EvidenceError` only.
"""

from __future__ import annotations

from collections.abc import Iterator

from ._errors import EvidenceError

WT_VARINT, WT_FIXED64, WT_LEN, WT_FIXED32 = 0, 1, 2, 5


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise EvidenceError("protobuf: truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift >= 70:
            raise EvidenceError("protobuf: varint longer than 10 bytes")
    if result >= 1 << 64:
        raise EvidenceError("protobuf: varint exceeds 64 bits")
    return result, pos


def proto_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) for each field in a message, in order."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if not 1 <= number < 1 << 29:
            raise EvidenceError(f"protobuf: invalid field number {number}")
        value: int | bytes
        if wire == WT_VARINT:
            value, pos = read_varint(buf, pos)
        elif wire == WT_FIXED64:
            if pos + 8 > len(buf):
                raise EvidenceError("protobuf: truncated fixed64")
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == WT_LEN:
            length, pos = read_varint(buf, pos)
            if pos + length > len(buf):
                raise EvidenceError(f"protobuf: field {number} is truncated")
            value, pos = buf[pos : pos + length], pos + length
        elif wire == WT_FIXED32:
            if pos + 4 > len(buf):
                raise EvidenceError("protobuf: truncated fixed32")
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise EvidenceError(f"protobuf: unsupported wire type {wire} (field {number})")
        yield number, wire, value


def expect_int(number: int, wire: int, value: int | bytes, bits: int, what: str) -> int:
    if wire != WT_VARINT or not isinstance(value, int):
        raise EvidenceError(f"protobuf: {what} (field {number}) must be a varint")
    if value >= 1 << bits:
        raise EvidenceError(f"protobuf: {what} (field {number}) exceeds {bits} bits")
    return value


def expect_bytes(number: int, wire: int, value: int | bytes, what: str) -> bytes:
    if wire != WT_LEN or not isinstance(value, bytes):
        raise EvidenceError(f"protobuf: {what} (field {number}) must be length-delimited")
    return value


def write_varint(value: int) -> bytes:
    if value < 0:
        value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_key(number: int, wire: int) -> bytes:
    return write_varint(number << 3 | wire)


def enc_uint(number: int, value: int) -> bytes:
    return field_key(number, WT_VARINT) + write_varint(value) if value else b""


def enc_bytes(number: int, value: bytes, *, always: bool = False) -> bytes:
    if not value and not always:
        return b""
    return field_key(number, WT_LEN) + write_varint(len(value)) + value
