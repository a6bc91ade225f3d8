"""API keys as they arrive from flags, files, the environment and apps' `Authorization` headers.

A key read with `$(cat key.txt)` from a CRLF file, or from a Kubernetes secret, carries a
trailing CR or LF. Sent as is, the HTTP library refuses the header and quotes it, escaped, in its
error, which then travels into logs and status pages. So keys are stripped of surrounding
whitespace, and a key with any other control or non-ASCII character is refused with a message
that does not contain it.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote


def clean_api_key(value: str, *, source: str) -> str:
    """`value` without surrounding whitespace; `ValueError` (never quoting it) if unusable.

    `source` names where the key came from (`--apiKey`, a file, an environment variable), so the
    message says what to fix.
    """
    key = value.strip()
    for position, char in enumerate(key, start=1):
        if not "\x21" <= char <= "\x7e":
            what = (
                "a space"
                if char == " "
                else "a control character"
                if ord(char) < 0x20 or ord(char) == 0x7F
                else "a non-ASCII character"
            )
            raise ValueError(
                f"the API key from {source} contains {what} at position {position} of "
                f"{len(key)}; an API key is printable ASCII without spaces: check that "
                f"{source} holds only the key"
            )
    return key


def key_forms(*values: str | None) -> list[str]:
    """Every form in which a key (or a raw, unstripped value of it) could show up in text:
    as is, stripped, Python- and JSON-escaped, URL-encoded and base64-encoded."""
    forms: set[str] = set()
    for value in values:
        if not value:
            continue
        for text in {value, value.strip()}:
            if not text:
                continue
            forms.add(text)
            forms.add(repr(text)[1:-1])
            forms.add(json.dumps(text)[1:-1])
            forms.add(json.dumps(text, ensure_ascii=False)[1:-1])
            forms.add(quote(text, safe=""))
            forms.add(base64.b64encode(text.encode("utf-8")).decode("ascii").rstrip("="))
    # Longest first, so a form that contains another is replaced whole.
    return sorted((f for f in forms if len(f) >= 4), key=len, reverse=True)


def redact(text: str, forms: list[str], replacement: str = "[REDACTED]") -> str:
    """`text` with every form of the key replaced."""
    for form in forms:
        if form in text:
            text = text.replace(form, replacement)
    return text
