"""JSON decoded as Go's encoding/json decodes it into Contrast's structs.

Keys match case-insensitively and the last one wins, null is the zero value, NaN/Infinity are
refused; bytes are standard base64. Every decoding error is an `EvidenceError` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any, TypeVar

from ._errors import EvidenceError

_Item = TypeVar("_Item")


class GoObject:
    """A JSON object as Go decodes into a struct: case-insensitive keys, the last one wins."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs

    def get(self, name: str) -> Any:
        folded = name.casefold()
        found: Any = None
        for key, value in self.pairs:
            if key == name or key.casefold() == folded:
                found = value
        return found


def go_reject_constant(name: str) -> Any:
    raise EvidenceError(f"JSON: {name} is not valid JSON")


def go_loads(data: bytes, what: str) -> Any:
    if not isinstance(data, (bytes, bytearray)):
        raise EvidenceError(f"{what}: expected bytes")
    try:
        text = bytes(data).decode("utf-8")
        return json.loads(text, object_pairs_hook=GoObject, parse_constant=go_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise EvidenceError(f"{what} is not valid JSON: {exc}") from None


def go_object(value: Any, what: str) -> GoObject:
    if value is None:
        return GoObject([])
    if not isinstance(value, GoObject):
        raise EvidenceError(f"{what} must be a JSON object")
    return value


def go_string(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise EvidenceError(f"{what} must be a JSON string")
    return value


def go_b64(value: Any, what: str) -> bytes:
    text = go_string(value, what)
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise EvidenceError(f"{what} is not valid standard base64") from None


def go_bool(value: Any, what: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise EvidenceError(f"{what} must be true or false")
    return value


def go_uint(value: Any, bits: int, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise EvidenceError(f"{what} must be an integer in 0..{(1 << bits) - 1}")
    return value


def go_int(value: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not -(1 << 63) <= value < 1 << 63:
        raise EvidenceError(f"{what} must be an integer")
    return value


def go_list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise EvidenceError(f"{what} must be a JSON array")
    return value


def go_items(value: Any, what: str, decode: Callable[[Any, str], _Item]) -> tuple[_Item, ...]:
    """A JSON array decoded element by element, each named ``what[i]`` in errors."""
    return tuple(decode(v, f"{what}[{i}]") for i, v in enumerate(go_list(value, what)))


def go_b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def go_dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
